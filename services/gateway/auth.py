"""Admin API bearer tokens: viewer (read) and operator (read and write)."""

from __future__ import annotations

import hmac
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from services.gateway.config import AdminToken, ConfigError

log = logging.getLogger("switchboard.auth")


@dataclass(frozen=True)
class Principal:
    name: str
    role: str

    @property
    def can_write(self) -> bool:
        return self.role == "operator"


class TokenSet:
    def __init__(self, tokens: list[tuple[Principal, bytes]]) -> None:
        self._tokens = tokens

    @classmethod
    def load(cls, specs: list[AdminToken], source: str = "<config>") -> TokenSet:
        """Read each token's value; a token whose variable is unset is left out (with a warning)."""
        tokens = []
        for i, spec in enumerate(specs):
            if spec.token_env is not None:
                value = os.environ.get(spec.token_env, "")
                if not value:
                    log.warning("admin token %r disabled: environment variable %s is unset", spec.name, spec.token_env)
                    continue
            else:
                try:
                    value = Path(spec.token_file or "").read_text().strip()
                except OSError as exc:
                    raise ConfigError(
                        f"{source}: admin.tokens[{i}].token_file: cannot read {spec.token_file}: {exc.strerror}"
                    ) from None
                if not value:
                    raise ConfigError(f"{source}: admin.tokens[{i}].token_file: {spec.token_file} is empty")
            tokens.append((Principal(spec.name, spec.role), value.encode()))
        return cls(tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    def authenticate(self, authorization: str | None) -> Principal | None:
        """The principal for an ``Authorization: Bearer ...`` header, compared in constant time."""
        if not authorization or not authorization.lower().startswith("bearer "):
            return None
        presented = authorization[7:].strip().encode()
        found = None
        for principal, value in self._tokens:  # no early exit: timing does not tell which matched
            if hmac.compare_digest(presented, value):
                found = principal
        return found

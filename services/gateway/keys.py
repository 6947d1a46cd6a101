"""Client keys (virtual keys): who may call the data plane, at which tier, on which routes, within which limits.

A key is ``sk-sb-`` and 43 URL-safe characters (256 random bits). Only its SHA-256 is stored: the key has
full entropy, so a plain hash is as strong as a slow one and costs a microsecond on the hot path. The
records live in the control state (versioned, audited, the same on every replica); their use this minute
and this budget period is metered by :mod:`services.gateway.usage`.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import asdict, dataclass, replace
from typing import Any

from services.admin_api import TIERS, KeyRecord, KeyUsage

KEY_PREFIX = "sk-sb-"
SHOWN_PREFIX_LEN = len(KEY_PREFIX) + 4  # enough to recognise a key in a list, far too little to guess it
TIER_RANK = {tier: rank for rank, tier in enumerate(TIERS)}


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str | bytes) -> str:
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).hexdigest()


def new_key_id() -> str:
    return "key_" + secrets.token_hex(6)


@dataclass(frozen=True)
class ClientKey:
    """One client key as stored in the control state."""

    id: str
    hash: str
    prefix: str
    name: str
    owner: str
    tier: str
    routes: tuple[str, ...]
    rpm_limit: int | None
    tpm_limit: int | None
    budget_usd: float | None
    budget_period: str
    expires_at: float | None
    disabled: bool
    created_at: float
    created_by: str

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["routes"] = list(self.routes)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClientKey:
        return cls(**{**data, "routes": tuple(data.get("routes", ()))})

    def public(self) -> dict[str, Any]:
        """The record without its hash: what the admin API shows and the audit log keeps."""
        data = self.to_dict()
        del data["hash"]
        return data

    def record(self, usage: KeyUsage | None = None) -> KeyRecord:
        return KeyRecord(**self.public(), usage=usage)

    def with_disabled(self, disabled: bool) -> ClientKey:
        return replace(self, disabled=disabled)

    def allows_route(self, route: str) -> bool:
        return not self.routes or route in self.routes

    def effective_tier(self, claimed: str | None) -> tuple[str, bool]:
        """The tier routing uses: a claimed tier at or below the key's, else the key's own.
        The flag says a claim above the key's tier was ignored."""
        if claimed is None:
            return self.tier, False
        rank = TIER_RANK.get(claimed)
        if rank is None or rank > TIER_RANK[self.tier]:
            return self.tier, True
        return claimed, False


class KeyRing:
    """The keys the data plane accepts, by hash; rebuilt whenever the control state changes."""

    __slots__ = ("_by_hash", "by_id")

    def __init__(self, keys: dict[str, ClientKey] | None = None) -> None:
        self.by_id: dict[str, ClientKey] = dict(keys or {})
        self._by_hash = {key.hash: key for key in self.by_id.values()}

    def lookup(self, presented: bytes) -> ClientKey | None:
        return self._by_hash.get(hash_key(presented))

    def __len__(self) -> int:
        return len(self.by_id)

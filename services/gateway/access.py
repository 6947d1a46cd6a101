"""The data plane's door: which client key is calling, whether it may use this route now, at which tier.

In ``keys`` mode every ``/v1/*`` request needs a live client key; the key sets the tier the routing
rules see (a tier header may ask for the key's tier or a lower one, never a higher one) and its limits
are checked before anything is sent upstream. In ``open`` mode (loopback listeners only) everyone
passes and tier headers are taken as they come.

A batch worker (an admin token of role ``worker``) sends each queued request as the key that queued it,
named by id in ``x-switchboard-batch-key``: that key's routes, limits, budget and usage apply. The header
is honoured only with a worker token, so a client key can never act as another.
"""

from __future__ import annotations

import time

from services.gateway.auth import Principal
from services.gateway.context import CONTEXT_HEADERS
from services.gateway.errors import RequestError
from services.gateway.keys import KEY_PREFIX, ClientKey, KeyRing
from services.gateway.metrics import GatewayMetrics
from services.gateway.usage import UsageMeter

TIER_HEADER = CONTEXT_HEADERS["tier"]
BATCH_KEY_HEADER = "x-switchboard-batch-key"  # a worker token sends a batch's request as this key id


class Access:
    def __init__(self, mode: str, meter: UsageMeter, metrics: GatewayMetrics, clock=time.time) -> None:
        self.required = mode == "keys"
        self.ring = KeyRing()
        self.meter = meter
        self.metrics = metrics
        self.clock = clock

    def _refuse(self, reason: str, status: int, message: str, code: str, **extra: object) -> RequestError:
        self.metrics.child("key_refusals", reason).inc()
        return RequestError(status, message, code=code, **extra)  # type: ignore[arg-type]

    def authenticate(self, authorization: bytes | None) -> ClientKey | None:
        """The calling key (None in open mode); raises 401 for a missing, unknown, disabled or expired key."""
        if not self.required:
            return None
        if not authorization or authorization[:7].lower() != b"bearer ":
            raise self._refuse("missing", 401, f"a client key is required: Authorization: Bearer {KEY_PREFIX}...",
                               "missing_api_key", error_type="invalid_request_error")
        key = self.ring.lookup(authorization[7:].strip())
        if key is None:
            raise self._refuse("invalid", 401, "incorrect client key", "invalid_api_key",
                               error_type="invalid_request_error")
        return self._live(key)

    def act_for(self, principal: Principal | None, key_id: str) -> ClientKey | None:
        """The key a batch worker sends for (``x-switchboard-batch-key``): only a worker token may claim one,
        and the key must be live, so a batch of a key disabled since it was queued stops being served."""
        if principal is None or principal.role != "worker":
            raise self._refuse("batch_key", 401, f"{BATCH_KEY_HEADER} is for batch workers: it needs a worker token",
                               "worker_token_required", error_type="invalid_request_error")
        if not self.required:
            return None
        key = self.ring.by_id.get(key_id)
        if key is None:
            raise self._refuse("invalid", 401, f"{BATCH_KEY_HEADER}: no client key '{key_id[:64]}'",
                               "invalid_api_key", error_type="invalid_request_error")
        return self._live(key)

    def _live(self, key: ClientKey) -> ClientKey:
        if key.disabled:
            raise self._refuse("disabled", 401, f"client key '{key.name}' is disabled", "key_disabled",
                               error_type="invalid_request_error")
        if key.expires_at is not None and self.clock() >= key.expires_at:
            raise self._refuse("expired", 401, f"client key '{key.name}' has expired", "key_expired",
                               error_type="invalid_request_error")
        return key

    def admit(self, key: ClientKey | None, route: str, headers: dict[str, str]) -> None:
        """Check route and limits, count the request, and put the key's tier into ``headers``."""
        if key is None:
            return
        if not key.allows_route(route):
            raise self._refuse("route", 403, f"client key '{key.name}' may not use route '{route}'; "
                               f"its routes are: {', '.join(key.routes)}", "route_not_allowed",
                               param="model", error_type="permission_error")
        claimed = headers.get(TIER_HEADER)
        tier, ignored = key.effective_tier(claimed.lower() if claimed else None)
        if ignored:
            self.metrics.tier_claims_ignored.inc()
        headers[TIER_HEADER] = tier
        refusal = self.meter.admit(key)
        if refusal is not None:
            raise self._refuse(refusal.reason, refusal.status, refusal.message, refusal.code,
                               error_type="insufficient_quota" if refusal.code == "insufficient_quota" else None,
                               retry_after_s=refusal.retry_after_s)

    def visible_routes(self, key: ClientKey | None, routes: list[str]) -> list[str]:
        return routes if key is None else [r for r in routes if key.allows_route(r)]

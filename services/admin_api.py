"""Request and response models of the gateway's admin API.

The one module both sides import: the gateway serves these shapes and the console reads them,
so the console never needs the gateway's internals.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictInt

OPERATOR_HEADER = "x-switchboard-operator"

#: Client tiers, lowest first. A client key carries one; a tier header may only claim the key's tier or lower.
TIERS = ("free", "paid", "enterprise")
Tier = Literal["free", "paid", "enterprise"]
BudgetPeriod = Literal["day", "week", "month", "total"]

# Bidirectional overrides and isolates (Trojan Source, CVE-2021-42574) and the line/paragraph separators.
_BIDI_AND_SEPARATORS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
                                 "\u2028\u2029")


def unsafe_character(value: str) -> str | None:
    """The first character a terminal could act on (C0/C1 controls, DEL, bidi controls), or a lone surrogate
    (no UTF-8 encoding: it could not even be stored), as ``U+XXXX``."""
    for char in value:
        if char in _BIDI_AND_SEPARATORS or unicodedata.category(char) in ("Cc", "Cs"):
            return f"U+{ord(char):04X}"
    return None


# The same rule as a JSON-schema pattern, so schema-driven clients know what is refused (lone surrogates
# are left out: JSON strings cannot carry them in valid UTF-8, and regex engines disagree about them).
_SAFE_CLASS = "\\x00-\\x1f\\x7f-\\x9f\\u061c\\u200e\\u200f\\u202a-\\u202e\\u2066-\\u2069\\u2028\\u2029"
PLAIN_TEXT_PATTERN = f"^[^{_SAFE_CLASS}]*$"
NOT_BLANK_PLAIN_TEXT_PATTERN = f"^[^{_SAFE_CLASS}]*[^\\s{_SAFE_CLASS}][^{_SAFE_CLASS}]*$"


def _plain_text(value: str) -> str:
    bad = unsafe_character(value)
    if bad is not None:
        raise ValueError(f"control or bidi character {bad} is not allowed")
    return value


#: Free text the gateway stores and consoles later draw: no control or bidi characters.
PlainText = Annotated[str, AfterValidator(_plain_text), Field(json_schema_extra={"pattern": PLAIN_TEXT_PATTERN})]


def _json_integer(value: Any) -> Any:
    """JSON has one number type: 3.0 is the integer 3 (as JSON Schema says); true and "3" are not integers."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def json_int(ge: int | None = None, le: int | None = None) -> Any:
    """An integer as JSON Schema defines it (strict: no strings, no booleans; but 3.0 counts), with bounds.
    The bounds sit inside the conversion so they appear in the schema as minimum and maximum."""
    return Annotated[StrictInt, Field(ge=ge, le=le), BeforeValidator(_json_integer)]

TargetStatus = Literal["healthy", "half_open", "open", "cooling_down", "drained", "disabled"]
BreakerName = Literal["closed", "half_open", "open"]


class TargetState(BaseModel):
    name: str
    provider: str
    model: str
    status: TargetStatus
    enabled: bool
    drained: bool
    breaker: BreakerName
    cooldown_until: float | None  # Unix time
    cooldown_left_s: float | None
    cooldown_reason: str | None
    ema_latency_ms: float | None
    error_rate: float
    window_requests: int
    requests_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    # Time to first token (streams) and total latency (whole answers), kept apart; ms over the recent window.
    ttft_ema_ms: float | None = None
    ttft_p50_ms: float | None = None
    ttft_p99_ms: float | None = None
    total_ema_ms: float | None = None
    total_p50_ms: float | None = None
    total_p99_ms: float | None = None


class PoolState(BaseModel):
    name: str
    weights: dict[str, int]
    available: bool


class GatewayState(BaseModel):
    version: int  # the control-state version a write must name as its base_version
    updated_at: float | None
    updated_by: str | None
    store: Literal["sqlite", "redis"]
    degraded: str | None  # why the state store is unreachable; writes are refused meanwhile
    started_at: float
    config_source: str
    ready: bool
    ready_reason: str
    in_flight: int
    routes: list[str]
    targets: list[TargetState]
    pools: list[PoolState]


def _reason(value: str) -> str:
    value = _plain_text(value).strip()
    if not value:
        raise ValueError("a reason is required")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


# The schema's pattern tells schema-driven clients a blank value is refused; the validators give the message.
_NOT_BLANK = {"pattern": NOT_BLANK_PLAIN_TEXT_PATTERN}

Reason = Annotated[str, Field(min_length=1, max_length=500, json_schema_extra=_NOT_BLANK,
                              description="why: required, not blank, no control or bidi characters"),
                   AfterValidator(_reason)]


class WeightsChange(BaseModel):
    """``PUT /admin/pools/{pool}/weights``: weights of some or all of the pool's targets."""

    model_config = ConfigDict(extra="forbid")
    weights: dict[str, json_int(0, 100)] = Field(min_length=1)  # type: ignore[valid-type]
    base_version: json_int(0) = Field(description="the state version this change was based on")  # type: ignore[valid-type]
    reason: Reason


class DrainChange(BaseModel):
    """``POST /admin/targets/{target}/drain`` and ``/undrain``."""

    model_config = ConfigDict(extra="forbid")
    reason: Reason
    base_version: json_int(0) | None = Field(None, description="omit to apply on the current version")  # type: ignore[valid-type]


class AuditRecord(BaseModel):
    version: int
    time: float
    actor: str  # the admin token's name
    operator: str | None  # user@host from the x-switchboard-operator header
    action: str  # set_weights, drain, undrain, create_key, disable_key, enable_key, delete_key, ...
    target: str
    reason: str
    before: Any
    after: Any


class AuditPage(BaseModel):
    entries: list[AuditRecord]


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: str | None = None
    param: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class ConflictResponse(BaseModel):
    """409: the base version was stale; ``current`` is the state to review before retrying."""

    error: ErrorDetail
    current: GatewayState


# ---- client keys (virtual keys) ------------------------------------------------------------------


class KeyUsage(BaseModel):
    """Use of one key as this replica knows it (exact on one replica; see the keys docs for Redis)."""

    requests_this_minute: int
    tokens_this_minute: int
    spend_usd: float  # in the current budget period
    period_started_at: float | None  # Unix time; None for the 'total' period


class KeyRecord(BaseModel):
    """A client key as stored: never the key itself, only its hash (not shown) and a recognisable prefix."""

    id: str  # public handle, "key_" + hex; what the admin API and the CLI name a key by
    prefix: str  # the key's first characters, "sk-sb-AbC"
    name: str
    owner: str
    tier: Tier
    routes: list[str]  # routes the key may name in `model`; empty means every route
    rpm_limit: int | None
    tpm_limit: int | None
    budget_usd: float | None
    budget_period: BudgetPeriod
    expires_at: float | None  # Unix time
    disabled: bool
    created_at: float
    created_by: str
    usage: KeyUsage | None = None


class KeyCreate(BaseModel):
    """``POST /admin/keys``."""

    model_config = ConfigDict(extra="forbid")
    name: Annotated[PlainText, Field(min_length=1, max_length=100, json_schema_extra=_NOT_BLANK),
                    AfterValidator(_not_blank)]
    owner: Annotated[PlainText, Field(min_length=1, max_length=200, json_schema_extra=_NOT_BLANK),
                     AfterValidator(_not_blank)]
    tier: Tier = "free"
    routes: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        [], max_length=100, description="routes the key may use; empty: every route")
    rpm_limit: json_int(1, 10_000_000) | None = Field(None, description="requests per minute")  # type: ignore[valid-type]
    tpm_limit: json_int(1, 10_000_000_000) | None = Field(None, description="tokens per minute")  # type: ignore[valid-type]
    budget_usd: float | None = Field(None, gt=0, le=1e9, allow_inf_nan=False,
                                     description="spend allowed per budget period, from the price table")
    budget_period: BudgetPeriod = "month"
    expires_at: float | None = Field(None, gt=0, le=1e11, allow_inf_nan=False, description="Unix time")
    reason: Reason


class KeyCreated(BaseModel):
    """The answer to a create: the key itself appears here once and is never stored or shown again."""

    key: str
    record: KeyRecord
    version: int


class KeyChange(BaseModel):
    """``POST /admin/keys/{id}/disable``, ``/enable`` and ``DELETE /admin/keys/{id}``."""

    model_config = ConfigDict(extra="forbid")
    reason: Reason


class KeyList(BaseModel):
    version: int
    keys: list[KeyRecord]

"""Request and response models of the gateway's admin API.

The one module both sides import: the gateway serves these shapes and the console reads them,
so the console never needs the gateway's internals.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    model_serializer,
    model_validator,
)

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


#: Systems the console acts on directly and records in the gateway's audit log; a bounded set, so audit filters
#: and any metric label stay bounded.
ExternalKind = Literal["kubernetes"]
#: Where an audited action took effect: the gateway's own state, or an external system.
AuditKind = Literal["gateway", ExternalKind]
ExternalOutcome = Literal["ok", "refused", "failed"]


class AuditRecord(BaseModel):
    version: int  # the state version the change produced; for an external action, the version it was taken at
    time: float
    actor: str  # the admin token's name
    operator: str | None  # user@host from the x-switchboard-operator header
    action: str  # set_weights, drain, undrain, create_key, ...; external: rollout.promote, rollout.abort, ...
    target: str
    reason: str
    before: Any
    after: Any  # external: {"detail": [the requests sent], "outcome": ExternalOutcome}
    kind: AuditKind = "gateway"


class ExternalAction(BaseModel):
    """``POST /admin/audit``: an action taken outside the gateway (a rollout promoted in Kubernetes), recorded in
    the gateway's audit log so one timeline shows both. It changes no gateway state."""

    model_config = ConfigDict(extra="forbid")
    kind: ExternalKind
    action: Annotated[PlainText, Field(min_length=1, max_length=100, json_schema_extra=_NOT_BLANK,
                                       description="what was done, e.g. rollout.promote"),
                      AfterValidator(_not_blank)]
    target: Annotated[PlainText, Field(min_length=1, max_length=300, json_schema_extra=_NOT_BLANK,
                                       description="the object acted on, e.g. prod-eu/ai-prod/rollouts/ai-api"),
                      AfterValidator(_not_blank)]
    reason: Reason
    detail: list[Annotated[PlainText, Field(max_length=4000)]] = Field(
        [], max_length=20, description="the exact requests sent (patches), one string each")
    outcome: ExternalOutcome


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


# ---- canary releases -------------------------------------------------------------------------------

ReleasePhase = Literal["Progressing", "Paused", "Degraded", "Healthy"]
ReleaseAction = Literal["promote", "promote-full", "pause", "resume", "abort", "retry"]
Verdict = Literal["pass", "fail", "inconclusive"]
Arm = Literal["stable", "canary"]
RELEASE_NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"  # a DNS label, as Argo Rollouts names are


class PauseStep(BaseModel):
    model_config = ConfigDict(extra="forbid")
    duration_s: float | None = Field(None, gt=0, le=30 * 86400, allow_inf_nan=False,
                                     description="omit to wait for a promote")


class AnalysisStep(BaseModel):
    """Wait until every gate is conclusive: all pass advances, a fail rolls back, too few samples pauses."""

    model_config = ConfigDict(extra="forbid")


def _one_of_steps(schema: dict[str, Any]) -> None:
    """Describe a step as JSON Schema can check it: exactly one of the three keys, none of them null."""
    variants = []
    for key, prop in schema.pop("properties").items():
        options = [option for option in prop.get("anyOf", [prop]) if option.get("type") != "null"]
        variants.append({"type": "object", "required": [key], "properties": {key: options[0]},
                         "additionalProperties": False})
    schema.pop("additionalProperties", None)
    schema["oneOf"] = variants


class CanaryStep(BaseModel):
    """One step in Argo Rollouts' vocabulary: exactly one of ``setWeight``, ``pause``, ``analysis``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_one_of_steps)
    setWeight: json_int(0, 100) | None = None  # type: ignore[valid-type]
    pause: PauseStep | None = None
    analysis: AnalysisStep | None = None

    @model_serializer(mode="wrap")
    def _only_the_step(self, handler: Any) -> dict[str, Any]:
        return {key: value for key, value in handler(self).items() if value is not None}

    @model_validator(mode="after")
    def _exactly_one(self) -> CanaryStep:
        if sum(x is not None for x in (self.setWeight, self.pause, self.analysis)) != 1:
            raise ValueError("a step is exactly one of setWeight, pause, analysis")
        return self


def seed_steps() -> list[CanaryStep]:
    """The seed's plan: 1% for an hour, 10% for two hours, 50% for four, analysis before each raise, then 100%."""
    hour = 3600.0
    plan: list[CanaryStep] = []
    for weight, hours in ((1, 1), (10, 2), (50, 4)):
        plan += [CanaryStep(setWeight=weight), CanaryStep(pause=PauseStep(duration_s=hours * hour)),
                 CanaryStep(analysis=AnalysisStep())]
    return [*plan, CanaryStep(setWeight=100)]


class Thresholds(BaseModel):
    """The gates; the seed's numbers are the defaults. A gate with fewer samples than its minimum is inconclusive."""

    model_config = ConfigDict(extra="forbid")
    max_error_rate: float = Field(0.01, ge=0, le=1, description="canary's error rate, absolute")
    max_p99_ratio: float = Field(3.0, gt=0, le=1000, description="canary p99 latency / stable's")
    max_cost_ratio: float = Field(2.0, gt=0, le=1000, description="canary cost per request / stable's")
    max_quality_drop: float = Field(0.10, ge=0, le=1, description="judge score drop against stable's, relative")
    min_quality: float | None = Field(None, ge=0, le=1, description="absolute floor for the canary's judge score")
    min_requests: json_int(1, 10_000_000) = Field(100, description="per arm, for error, latency, cost")  # type: ignore[valid-type]
    min_judged: json_int(1, 1_000_000) = Field(20, description="judged answers per arm for the quality gate")  # type: ignore[valid-type]


class JudgeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target: str = Field(min_length=1, max_length=200, description="the target that grades answers (a config target)")
    sample_rate: float = Field(0.05, ge=0, le=1, description="share of each arm's answers sent to the judge")
    rubric: Annotated[PlainText, Field(max_length=4000)] = (
        "Grade the assistant's answer to the user's request for correctness, helpfulness and clarity.")


class ReleaseSpec(BaseModel):
    """A canary target replacing a stable one inside a pool (a new model, version, prompt or provider)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=RELEASE_NAME_PATTERN, description="lower-case letters, digits and '-'")
    pool: str = Field(min_length=1, max_length=200)
    stable: str = Field(min_length=1, max_length=200, description="the target in service now")
    canary: str = Field(min_length=1, max_length=200, description="the target replacing it")
    steps: list[CanaryStep] = Field(default_factory=seed_steps, min_length=1, max_length=100)
    thresholds: Thresholds = Thresholds()
    judge: JudgeSettings | None = None
    analysis_interval_s: float = Field(60.0, gt=0, le=86400, allow_inf_nan=False,
                                       description="how often the gates are evaluated while the release runs")


class ReleaseCreate(ReleaseSpec):
    """``POST /admin/releases``."""

    reason: Reason


class ReleaseChange(BaseModel):
    """``POST /admin/releases/{name}/{action}``: the version read, so a changed release is a 409."""

    model_config = ConfigDict(extra="forbid")
    base_version: json_int(0) = Field(description="the state version this action was based on")  # type: ignore[valid-type]
    reason: Reason


class ArmStats(BaseModel):
    """One arm over the current step's window, all replicas merged."""

    requests: int = 0
    errors: int = 0
    error_rate: float | None = None
    p99_ms: float | None = None
    cost_per_request: float | None = None
    quality: float | None = None  # mean judge score, 0..1
    judged: int = 0
    judge_errors: int = 0
    judge_dropped: int = 0


class GateResult(BaseModel):
    gate: Literal["error_rate", "p99_latency", "cost", "quality", "quality_floor"]
    verdict: Verdict
    value: float | None  # the canary's figure (a ratio for p99 and cost, a relative drop for quality)
    threshold: float
    samples: dict[str, int]  # per arm
    detail: str


class Transition(BaseModel):
    time: float
    phase: ReleasePhase
    step_index: int
    reason: str
    actor: str  # "controller" or the operator


class ReleaseState(BaseModel):
    spec: ReleaseSpec
    phase: ReleasePhase
    step_index: int  # 0-based; == len(steps) when done
    steps_total: int
    desired_weight: int  # the canary weight the steps call for now
    actual_weight: int  # the canary weight the router applies (0 once aborted)
    step_started_at: float | None
    time_in_step_s: float | None
    pause_left_s: float | None  # for a timed pause
    message: str  # why it is where it is (inconclusive gate, the failed gate and its numbers, ...)
    aborted: bool
    analysis: list[GateResult]
    arms: dict[str, ArmStats]
    history: list[Transition]


class ReleaseList(BaseModel):
    version: int
    releases: list[ReleaseState]


# ---- batch queue (``/admin/queue``, ``/admin/batches``) -------------------------------------------

BatchStatus = Literal["validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling",
                      "cancelled"]


class QueueWorker(BaseModel):
    """One consumer of a stream's group, as XINFO CONSUMERS reports it."""

    name: str
    pending: int  # entries it holds, delivered and not yet acknowledged
    idle_s: float  # since its last read or claim


class QueueStream(BaseModel):
    """One endpoint's stream and its consumer group."""

    endpoint: str  # "chat" or "completions"
    stream: str  # the Redis key
    length: int  # entries not yet finished (finished entries are acknowledged and deleted)
    pending: int  # delivered to a worker and not yet acknowledged
    oldest_age_s: float | None  # age of the oldest unfinished entry; None when empty
    workers: list[QueueWorker]
    completed_per_s: float  # results written (done or failed), over the last minute
    retries_total: int  # requests tried again (after an error or a claim), since the stream was created


class BatchProgress(BaseModel):
    """A batch as the console shows it; ``owner`` is the client key's name (None in open mode)."""

    id: str
    endpoint: str  # "/v1/chat/completions" or "/v1/completions", as OpenAI names it
    status: BatchStatus
    total: int
    completed: int
    failed: int
    created_at: float
    owner: str | None = None
    description: str | None = None  # metadata["description"], when the client gave one


class QueueSnapshot(BaseModel):
    """``GET /admin/queue``: every stream, and the batches not yet finished plus those finished in the last hour."""

    enabled: bool  # False: no batch.redis_url configured; ``reason`` says so
    reason: str | None = None  # why the queue cannot be read (not enabled, Redis down), without credentials
    streams: list[QueueStream] = []
    batches: list[BatchProgress] = []


class BatchCancel(BaseModel):
    """``POST /admin/batches/{id}/cancel``: stop a batch (audited as batch.cancel)."""

    model_config = ConfigDict(extra="forbid")
    reason: Reason

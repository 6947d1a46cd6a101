"""Gateway configuration: one YAML file, validated with pydantic.

A bad file fails start-up with :class:`ConfigError`, whose message names the file, the key path and
what was expected. Secrets never live in the file: a target names the environment variable that
holds its API key.
"""

from __future__ import annotations

import ipaddress
import os
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from services.admin_api import ReleaseSpec

ContextField = Literal["tier", "task", "quality", "latency_budget_ms", "estimated_tokens"]


class ConfigError(Exception):
    """The configuration file cannot be used; the message says where and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Timeouts(_Strict):
    connect_s: float = Field(5.0, gt=0)
    ttft_s: float = Field(30.0, gt=0, description="time to first token (first byte for non-streaming)")
    stall_s: float = Field(30.0, gt=0, description="longest silence between two stream chunks")
    total_s: float = Field(300.0, gt=0)


class Price(_Strict):
    input_per_1k: float = Field(0.0, ge=0)
    output_per_1k: float = Field(0.0, ge=0)


class Target(_Strict):
    provider: Literal["openai", "anthropic"]
    model: str = Field(min_length=1)
    base_url: str | None = None
    api_key_env: str | None = Field(
        None, description="environment variable holding the API key; the target is disabled when unset"
    )
    timeouts: Timeouts = Timeouts()
    price: Price = Price()
    system_prompt: str | None = Field(
        None, description="put first in every chat request sent here: a prompt version, released like a model",
    )
    max_connections: int = Field(256, ge=1)
    client: Literal["direct", "sdk"] = Field(
        "direct",
        description="openai targets: 'sdk' sends every request through the openai SDK; 'direct' takes the "
        "SDK's base URL and headers and sends through a pooled aiohttp session (about 0.4 ms less per request)",
    )


class Pool(_Strict):
    targets: dict[str, Annotated[int, Field(ge=0, le=100)]] = Field(min_length=1)

    @model_validator(mode="after")
    def _not_all_zero(self) -> Pool:
        if not any(self.targets.values()):
            raise ValueError("at least one target weight must be above 0")
        return self


class Comparison(_Strict):
    """An operator on one context field: ``{lt: 500}``, ``{ne: high}``, ``{in: [a, b]}``."""

    eq: str | int | None = None
    ne: str | int | None = None
    lt: float | None = None
    le: float | None = None
    gt: float | None = None
    ge: float | None = None
    in_: list[str | int] | None = Field(None, alias="in")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class PoolRequirement(_Strict):
    """Health a target must show for a rule to use its pool (the seed's 'available and ...')."""

    max_ema_latency_ms: float | None = Field(None, gt=0)
    max_error_rate: float | None = Field(None, ge=0, le=1)


class Rule(_Strict):
    name: str = Field(min_length=1)
    match: dict[ContextField, str | int | Comparison] = {}
    pool: str | None = None
    pools: list[str] | None = Field(None, description="first pool, in order, that has a qualifying target")
    require: PoolRequirement = PoolRequirement()

    @model_validator(mode="after")
    def _one_pool_form(self) -> Rule:
        if (self.pool is None) == (self.pools is None):
            raise ValueError("give exactly one of 'pool' or 'pools'")
        return self


class Route(_Strict):
    """What a client names in ``model``: a fixed pool, or an ordered rule set."""

    pool: str | None = None
    rules: list[Rule] | None = None
    default_pool: str | None = Field(None, description="pool used when no rule matches")
    fallback: list[str] = Field([], description="pools tried, in order, after the chosen one")

    @model_validator(mode="after")
    def _one_form(self) -> Route:
        if (self.pool is None) == (self.rules is None):
            raise ValueError("give exactly one of 'pool' or 'rules'")
        return self


class Breaker(_Strict):
    error_rate_threshold: float = Field(0.5, gt=0, le=1)
    min_requests: int = Field(10, ge=1)
    cooldown_s: float = Field(30.0, gt=0)


class Health(_Strict):
    ema_alpha: float = Field(0.3, gt=0, le=1)
    error_window_s: int = Field(60, ge=1, le=3600)
    breaker: Breaker = Breaker()


class Retry(_Strict):
    max_retries: int = Field(2, ge=0, le=10, description="same-target retries on 5xx, timeout, connect")
    backoff_base_s: float = Field(0.05, ge=0)
    backoff_max_s: float = Field(1.0, ge=0)
    budget_s: float = Field(2.0, ge=0, description="most time spent sleeping between retries per request")


class Cooldowns(_Strict):
    rate_limit_default_s: float = Field(5.0, ge=1, le=60, description="429 without Retry-After")
    rate_limit_min_s: float = Field(1.0, ge=0)
    rate_limit_max_s: float = Field(60.0, ge=1)
    auth_s: float = Field(60.0, gt=0, description="after 401, 403 or 404")


class Limits(_Strict):
    """What one data-plane request may take from the gateway."""

    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="larger bodies get 413, checked while reading")
    body_read_timeout_s: float = Field(
        30.0, gt=0, description="time to receive the whole body once the headers are in; then 408 and the "
        "connection is closed",
    )
    max_concurrent_requests: int = Field(
        1024, ge=1, description="completion requests served at once; past it 503 with retry-after"
    )
    request_timeout_s: float | None = Field(
        None, gt=0, description="deadline for a whole request, across every retry and fallback and the stream "
        "itself; default: the largest total_s among the targets it may try, so one attempt can always use its "
        "own total_s but retries and fallbacks never stretch a request past it",
    )


class Server(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    grace_period_s: float = Field(20.0, ge=0)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    access_log: bool = False


class AdminToken(_Strict):
    """A bearer token for the admin API; its value comes from an environment variable or a file."""

    name: str = Field(min_length=1, description="recorded in the audit log as the actor")
    role: Literal["viewer", "operator", "worker"] = Field(
        description="viewer reads the admin API, operator also writes; worker may only send batch requests on "
        "behalf of the key that created the batch (the data plane's x-switchboard-batch-key header)")
    token_env: str | None = None
    token_file: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> AdminToken:
        if (self.token_env is None) == (self.token_file is None):
            raise ValueError("give exactly one of 'token_env' or 'token_file'")
        return self


class Admin(_Strict):
    host: str | None = Field(None, description="serve the admin API on its own address (with 'port')")
    port: int | None = Field(None, ge=0, le=65535)
    tokens: list[AdminToken] = []

    @model_validator(mode="after")
    def _host_and_port(self) -> Admin:
        if (self.host is None) != (self.port is None):
            raise ValueError("give both 'host' and 'port' for a separate admin listener, or neither")
        return self


class Auth(_Strict):
    """Who may call the data plane (``/v1/*``)."""

    mode: Literal["keys", "open"] = Field(
        "keys",
        description="'keys': a client key (Authorization: Bearer sk-sb-...) is required and sets the tier; "
        "'open': anyone who reaches the port, tier from the x-switchboard-tier header (loopback listeners only)",
    )


class StateSettings(_Strict):
    backend: Literal["sqlite", "redis"] = "sqlite"
    path: str | None = Field(None, description="SQLite file; default $XDG_DATA_HOME/switchboard/gateway-state.db")
    redis_url: str | None = None
    redis_prefix: str = Field("switchboard", min_length=1)

    @model_validator(mode="after")
    def _redis_needs_url(self) -> StateSettings:
        if self.backend == "redis" and not self.redis_url:
            raise ValueError("backend 'redis' needs 'redis_url'")
        return self


class CanarySettings(_Strict):
    tick_s: float = Field(1.0, gt=0, le=60, description="how often the lease holder looks at the releases")
    lease_ttl_s: float = Field(5.0, gt=0, le=300, description="a lease holder silent this long is replaced")
    publish_s: float = Field(1.0, gt=0, le=60, description="how often each replica publishes its arms' counts")


class BatchSettings(_Strict):
    """The batch API (``/v1/files``, ``/v1/batches``) and its Redis Streams queue; off without ``redis_url``."""

    redis_url: str | None = Field(None, description="Redis holding files, batches, the queue and results; "
                                  "unset: the batch API answers 404 saying so")
    prefix: str = Field("switchboard:batch", min_length=1, description="prefix of every Redis key the batch API uses")
    file_dir: str | None = Field(None, description="directory for files larger than inline_max_bytes (outputs "
                                 "included); unset: every file is kept in Redis")
    inline_max_bytes: int = Field(4 * 1024 * 1024, ge=0, description="files up to this size are kept in Redis")
    file_ttl_s: int = Field(7 * 86400, ge=60, description="files, batches and results expire this long after "
                            "their last change")
    max_file_bytes: int = Field(100 * 1024 * 1024, ge=1024, description="largest batch input file (413 past it)")
    max_lines: int = Field(50_000, ge=1, description="most requests in one batch")
    max_queued_per_key: int = Field(200_000, ge=1, description="most unfinished requests one key may have queued")
    visibility_timeout_s: float = Field(60.0, gt=0, description="an entry a worker holds this long without "
                                        "acknowledging is claimed by another worker (XAUTOCLAIM)")
    max_attempts: int = Field(3, ge=1, le=100, description="a request tried this many times goes to the error file")
    yield_at: float = Field(0.8, gt=0, le=1, description="batch requests are refused (503, retried by the worker) "
                            "while the gateway's in-flight requests reach this share of limits.max_concurrent_requests")


class GatewayConfig(_Strict):
    server: Server = Server()
    admin: Admin = Admin()
    auth: Auth = Auth()
    state: StateSettings = StateSettings()
    health: Health = Health()
    retry: Retry = Retry()
    cooldowns: Cooldowns = Cooldowns()
    limits: Limits = Limits()
    targets: dict[str, Target] = Field(min_length=1)
    pools: dict[str, Pool] = Field(min_length=1)
    routes: dict[str, Route] = Field(min_length=1)
    releases: list[ReleaseSpec] = Field([], description="canary releases to start (once) when the gateway starts")
    canary: CanarySettings = CanarySettings()
    batch: BatchSettings = BatchSettings()

    @model_validator(mode="after")
    def _references_exist(self) -> GatewayConfig:
        problems: list[str] = []
        for pool_name, pool in self.pools.items():
            for target in pool.targets:
                if target not in self.targets:
                    problems.append(f"pools.{pool_name}.targets.{target}: unknown target")
        for route_name, route in self.routes.items():
            named = [("pool", route.pool), ("default_pool", route.default_pool)]
            named += [(f"fallback[{i}]", p) for i, p in enumerate(route.fallback)]
            for i, rule in enumerate(route.rules or []):
                named.append((f"rules[{i}].pool", rule.pool))
                named += [(f"rules[{i}].pools[{j}]", p) for j, p in enumerate(rule.pools or [])]
            for where, pool_name in named:
                if pool_name is not None and pool_name not in self.pools:
                    problems.append(f"routes.{route_name}.{where}: unknown pool '{pool_name}'")
        for i, release in enumerate(self.releases):
            problems += [f"releases[{i}].{p}" for p in release_problems(self, release)]
        if self.auth.mode == "open" and not is_loopback(self.server.host):
            problems.append(f"auth.mode: 'open' is allowed only on a loopback listener, not server.host "
                            f"'{self.server.host}'; use mode 'keys'")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def api_key(self, target_name: str) -> str | None:
        """The target's API key from its environment variable, or None when unset."""
        env = self.targets[target_name].api_key_env
        return os.environ.get(env) or None if env else None

    def enabled(self, target_name: str) -> bool:
        """A target whose key variable is named but unset is disabled (its cloud is not configured)."""
        target = self.targets[target_name]
        return target.api_key_env is None or self.api_key(target_name) is not None


def release_problems(config: GatewayConfig, spec: ReleaseSpec) -> list[str]:
    """What is wrong with a release for this configuration: its pool and targets must exist, both targets
    must be in the pool, and a judge must be a known target."""
    if spec.stable == spec.canary:
        return [f"canary: '{spec.canary}' is the stable target too; a release replaces one target with another"]
    pool = config.pools.get(spec.pool)
    if pool is None:
        return [f"pool: unknown pool '{spec.pool}'"]
    problems = [f"{arm}: '{name}' is not a target of pool '{spec.pool}'"
                for arm, name in (("stable", spec.stable), ("canary", spec.canary)) if name not in pool.targets]
    if spec.judge is not None and spec.judge.target not in config.targets:
        problems.append(f"judge.target: unknown target '{spec.judge.target}'")
    return problems


def is_loopback(host: str) -> bool:
    """Whether a listen address accepts connections from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _format_location(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def parse_config(data: Any, source: str) -> GatewayConfig:
    """Validate already-loaded YAML data; ``source`` names the file in error messages."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"  {_format_location(err['loc'])}: {msg}")
        raise ConfigError(f"{source}: invalid configuration\n" + "\n".join(lines)) from None


def load_config(path: str | Path) -> GatewayConfig:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(data, str(path))


def example_config_path(name: str = "gateway.example.yaml") -> Path:
    """Path of an example config shipped inside the package."""
    return Path(str(resources.files("services.gateway") / "examples" / name))

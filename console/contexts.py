"""Console contexts, like kubeconfig: where the gateway's admin API is, whose token, which cluster.

The file is YAML at ``$XDG_CONFIG_HOME/switchboard/console.yaml`` (or ``--config``)::

    current: local
    operator: alice@bastion          # optional; default user@host
    keys: {apply_weights: ctrl+s}    # optional remapping by action id
    contexts:
      local:
        admin_url: http://127.0.0.1:8080
        token_env: SWITCHBOARD_ADMIN_TOKEN
        engine_url: http://127.0.0.1:8000
        poll_intervals: {engine: 5}  # seconds; gateway, engine, audit
        bench_presets: {smoke: {target: gateway, num_prompts: 20}}  # optional; see console.views.bench_form
      prod:
        admin_url: https://gw.internal:9443
        token_file: ~/.config/switchboard/prod.token
        prometheus_url: http://prometheus:9090
        kube_context: prod-eu
        namespace: ai-prod
        readonly: true
        color: red
        prod: true

With no file, the embedded ``local`` context points at what ``make up`` starts: the running stack's
admin URL from its record in the state directory (127.0.0.1:8080 when there is none), and its token
from ``$SWITCHBOARD_ADMIN_TOKEN`` when that is set, else from the operator token file ``make up``
wrote there. A context may name both ``token_env`` and ``token_file``: the variable wins when set.
"""

from __future__ import annotations

import getpass
import os
import socket
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from console.statedir import OPERATOR_TOKEN, read_stack_record, state_path
from console.views.bench_form import BenchPreset

DEFAULT_ADMIN_URL = "http://127.0.0.1:8080"
DEFAULT_ENGINE_URL = "http://127.0.0.1:8000"


class ContextError(Exception):
    """The console config cannot be used; the message names the file, the key and the problem."""


class Context(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "local"
    admin_url: str = DEFAULT_ADMIN_URL
    token_env: str | None = "SWITCHBOARD_ADMIN_TOKEN"
    token_file: str | None = None
    engine_url: str | None = DEFAULT_ENGINE_URL
    prometheus_url: str | None = None
    kubeconfig: str | None = Field(None, description="default $KUBECONFIG, else ~/.kube/config")
    kube_context: str | None = Field(None, description="the kubeconfig context; set it (or kubeconfig) to show the "
                                                       "cluster panes")
    namespace: str | None = Field(None, description="the namespace the cluster panes watch; default all")
    readonly: bool = False
    prod: bool = Field(False, description="writes ask the operator to type the name they change")
    color: Literal["red", "yellow", "green", "blue", "magenta", "cyan", "white"] = "green"
    poll_interval_s: float = Field(1.0, gt=0)
    poll_intervals: dict[Literal["gateway", "engine", "audit"], Annotated[float, Field(gt=0)]] = Field(
        {}, description="per-source overrides; by default the engine and audit poll at twice poll_interval_s"
    )
    timeout_s: float = Field(2.0, gt=0)
    bench_presets: dict[str, BenchPreset] = Field({}, description="named benchmark forms (console.views.bench_form)")

    @property
    def watches_cluster(self) -> bool:
        """Whether the console shows a Kubernetes cluster for this context."""
        return bool(self.kubeconfig or self.kube_context)

    def token(self) -> str | None:
        """The admin token, read when needed (never stored in the config file itself).

        ``token_env`` when that variable is set, else ``token_file``; None when neither is configured.
        """
        from_env = os.environ.get(self.token_env) if self.token_env else None
        if from_env or not self.token_file:
            return from_env or None
        try:
            return Path(self.token_file).expanduser().read_text().strip() or None
        except OSError as exc:
            unset = f" (and ${self.token_env} is unset)" if self.token_env else ""
            raise ContextError(f"context '{self.name}': cannot read token_file {self.token_file}: "
                               f"{exc.strerror}{unset}") from None


class ConsoleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    current: str | None = None
    operator: str | None = None
    keys: dict[str, str] = {}
    contexts: dict[str, Context] = {}


def default_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "switchboard" / "console.yaml"


def default_operator() -> str:
    try:
        user = getpass.getuser()
    except OSError:
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def load_console_config(path: str | Path | None = None) -> ConsoleConfig:
    """Read the console config; a missing default file means the embedded ``local`` context."""
    explicit = path is not None
    path = Path(path) if path is not None else default_config_path()
    if not path.exists():
        if explicit:
            raise ContextError(f"{path}: no such console config file")
        return ConsoleConfig(current="local", contexts={"local": local_context()})
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ContextError(f"{path}: cannot read console config: {exc}") from None
    if isinstance(data, dict):
        for name, ctx in (data.get("contexts") or {}).items():
            if isinstance(ctx, dict):
                ctx.setdefault("name", name)
    try:
        config = ConsoleConfig.model_validate(data)
    except ValidationError as exc:
        problems = "\n".join(
            f"  {'.'.join(str(p) for p in err['loc'])}: {err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors()
        )
        raise ContextError(f"{path}: invalid console config\n{problems}") from None
    if not config.contexts:
        config.contexts = {"local": local_context()}
    return config


def local_context() -> Context:
    """The embedded context: the stack ``switchboard up`` runs (or last ran) here, else the defaults."""
    record = read_stack_record()
    if record is None:
        return Context(token_file=str(state_path() / OPERATOR_TOKEN))
    return Context(admin_url=record.admin_url, token_file=record.operator_token_file,
                   kubeconfig=record.kubeconfig or None)


def pick_context(config: ConsoleConfig, name: str | None) -> Context:
    chosen = name or config.current or next(iter(config.contexts))
    if chosen not in config.contexts:
        raise ContextError(f"no context '{chosen}'; known: {', '.join(config.contexts)}")
    return config.contexts[chosen]

"""CLI verbs for runbooks and scripts, built from the action registry (console.actions).

Every registry entry with a ``cli`` verb becomes a ``switchboard`` subcommand ("keys create" nests under
``keys``). Verbs send exactly what the console's actions send, through the same context (URL, token,
operator) the console would use. A verb that acts on Kubernetes (``CliVerb.cluster``: ``rollout promote``)
also gets the context's cluster (its ``kubeconfig`` and ``kube_context``) as ``args.cluster``; a context that
names no cluster is bad usage. Exit codes: 0 ok, 1 refused, conflict or nothing to do, 2 unreachable or bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable

from console.actions import CLI_ACTIONS, Action, ClusterTarget, UsageError
from console.actions.base import say
from console.contexts import Context, ContextError, default_operator, load_console_config, pick_context
from console.sources.gateway import AdminError, Conflict, GatewayClient, SourceDown
from console.sources.kube import KubeConfigError, load_api_client


def add_context_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="console config (default $XDG_CONFIG_HOME/switchboard/console.yaml)")
    parser.add_argument("--context", help="context name from the console config")


def _context(args: argparse.Namespace) -> tuple[Context, str]:
    if getattr(args, "gateway", None):  # a verb given the admin URL itself (``judge --gateway``): no config read
        return Context(name="gateway", admin_url=args.gateway, token_env=args.token_env, engine_url=None), \
            default_operator()
    config = load_console_config(args.config)
    return pick_context(config, args.context), config.operator or default_operator()


def run_verb(args: argparse.Namespace, action: Action) -> int:
    """Resolve the context, refuse writes on a read-only one, run the verb, map what went wrong to an exit code."""
    assert action.cli is not None
    try:
        context, operator = _context(args)
    except ContextError as exc:
        say(f"switchboard: {exc}", err=True)
        return 2
    if action.writes and context.readonly:
        say(f"switchboard: context '{context.name}' is read-only", err=True)
        return 1
    run: Callable[[argparse.Namespace, GatewayClient], Awaitable[int]] = action.cli.run
    if action.cli.cluster:
        try:
            args.cluster = _cluster(context)
        except (ContextError, KubeConfigError) as exc:
            say(f"switchboard: {exc}", err=True)
            return 2

    async def go() -> int:
        client = GatewayClient(context.admin_url, context.token(), operator, context.timeout_s)
        try:
            return await run(args, client)
        finally:
            await client.aclose()
            if action.cli is not None and action.cli.cluster:
                args.cluster.api.close()

    try:
        return asyncio.run(go())
    except UsageError as exc:
        say(f"switchboard: {exc}", err=True)
        return 2
    except SourceDown as exc:
        say(f"switchboard: {exc}", err=True)
        return 2
    except Conflict as exc:
        say(f"switchboard: {exc.message}", err=True)
        return 1
    except AdminError as exc:
        say(f"switchboard: refused ({exc.status}): {exc.message}", err=True)
        return 1


def _cluster(context: Context) -> ClusterTarget:
    """The context's cluster, as the console would watch it (its kubeconfig and kube_context)."""
    if not context.watches_cluster:
        raise ContextError(f"context '{context.name}' names no cluster: set its kubeconfig or kube_context")
    api, kube_context, _ = load_api_client(context.kubeconfig, context.kube_context)
    return ClusterTarget(api, kube_context, context.namespace)


def add_verbs(commands: argparse._SubParsersAction) -> None:
    """One subcommand per registry verb; multi-word verbs share a group parser (``weights``, ``keys``)."""
    groups: dict[str, argparse._SubParsersAction] = {}
    for action in CLI_ACTIONS:
        assert action.cli is not None
        *group, name = action.cli.name.split(" ")
        parent = commands
        if group:
            parent = groups.get(group[0]) or _group(commands, group[0], groups)
        parser = parent.add_parser(name, help=action.cli.help)
        add_context_options(parser)
        action.cli.arguments(parser)
        if action.writes:
            parser.add_argument("--reason", required=True, help="why: recorded in the audit log")
        parser.set_defaults(run=lambda args, action=action: run_verb(args, action))


def _group(commands: argparse._SubParsersAction, name: str,
           groups: dict[str, argparse._SubParsersAction]) -> argparse._SubParsersAction:
    verbs = [a.cli.name.split(" ", 1)[1] for a in CLI_ACTIONS if a.cli and a.cli.name.startswith(f"{name} ")]
    group = commands.add_parser(name, help=f"{name}: {', '.join(verbs)}")
    groups[name] = group.add_subparsers(dest=f"{name}_command", required=True, metavar="|".join(verbs))
    return groups[name]

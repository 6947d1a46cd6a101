"""Canary releases: promote, promote-full, pause, resume, abort and retry in the console and as
``switchboard release ...`` verbs, and ``switchboard judge`` for an Argo AnalysisTemplate Job.

Preconditions are Argo Rollouts' (its dashboard's rules): promote only while Paused or Progressing and not
aborted; pause only while Progressing; resume only while Paused; abort unless Degraded or Healthy; retry
only when Degraded. The gateway checks them too (a 409); checking here greys the key and lets a verb
refuse before it sends anything. Every action sends the state version the release was read at, so a
release that changed meanwhile is a 409, shown like any other conflict.

The figures (gate values and thresholds, step kinds) are formatted here, without Textual, so the pane,
the confirm dialog and the CLI say the same thing.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import datetime

from console.actions.base import Action, ActionState, CliVerb, ConsoleHost, Danger, say
from console.actions.writes import WriteRequest, confirm_then_write
from console.sources.gateway import AdminError, GatewayClient, SourceDown
from console.units import duration
from services.admin_api import ArmStats, GateResult, ReleaseList, ReleaseSpec, ReleaseState

GATE_LABELS = {"error_rate": "error rate", "p99_latency": "p99 latency", "cost": "cost/request",
               "quality": "quality drop", "quality_floor": "quality floor"}
QUALITY_GATES = ("quality", "quality_floor")
VERDICT_MARKS = {"pass": "✔", "fail": "✖", "inconclusive": "?"}

# `switchboard judge` exit codes: what an Argo AnalysisTemplate Job reads.
JUDGE_PASS, JUDGE_FAIL, JUDGE_UNREACHABLE, JUDGE_INCONCLUSIVE = 0, 1, 2, 3


# ---- figures shared by the pane, the confirm dialog and the CLI -----------------------------------


def _percent(fraction: float | None) -> str:
    return "-" if fraction is None else f"{fraction * 100:.1f}%"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def gate_figures(gate: GateResult) -> tuple[str, str]:
    """The canary's value and the threshold as read: ``0.4%`` against ``≤ 1.0%``, ``1.20x`` against ``≤ 3.00x``."""
    if gate.gate in ("error_rate", "quality"):
        return _percent(gate.value), f"≤ {_percent(gate.threshold)}"
    if gate.gate == "quality_floor":
        return _score(gate.value), f"≥ {_score(gate.threshold)}"
    return _ratio(gate.value), f"≤ {_ratio(gate.threshold)}"


def samples_text(samples: dict[str, int]) -> str:
    """``120/14``: per-arm sample counts, stable's first (the column header names the arms)."""
    order = sorted(samples, key=lambda arm: (arm != "stable", arm != "canary", arm))
    return "/".join(f"{samples[arm]}" for arm in order)


def step_kind(spec: ReleaseSpec, index: int) -> str:
    """The step as Argo names it: ``setWeight 20``, ``pause 1h00m``, ``pause (until promoted)``, ``analysis``."""
    if index >= len(spec.steps):
        return "complete"
    step = spec.steps[index]
    if step.setWeight is not None:
        return f"setWeight {step.setWeight}"
    if step.pause is not None:
        return "pause (until promoted)" if step.pause.duration_s is None else f"pause {duration(step.pause.duration_s)}"
    return "analysis"


def step_position(release: ReleaseState) -> str:
    """``2/10``: 1-based, the way Argo shows ``Step: 2/10``; ``10/10`` once every step is done."""
    return f"{min(release.step_index + 1, release.steps_total)}/{release.steps_total}"


def gate_line(gate: GateResult) -> str:
    value, threshold = gate_figures(gate)
    samples = ", ".join(f"{arm} {count}" for arm, count in gate.samples.items())
    return (f"{VERDICT_MARKS[gate.verdict]} {GATE_LABELS[gate.gate]:13} {value:>8} {threshold:>10}  "
            f"{gate.verdict:12} samples {samples}")


def analysis_text(release: ReleaseState) -> str:
    """The current analysis, one gate a line (the confirm dialog and ``release show``)."""
    if not release.analysis:
        return "no analysis yet"
    return "\n".join(gate_line(gate) for gate in release.analysis)


def analysis_summary(release: ReleaseState) -> str:
    """The current analysis on one line for the confirm dialog: each gate's verdict, value and threshold, and
    the per-arm samples (stable/canary) of an inconclusive gate."""
    if not release.analysis:
        return "no analysis yet"
    parts = []
    for gate in release.analysis:
        value, threshold = gate_figures(gate)
        samples = f" ({gate.verdict}, n {samples_text(gate.samples)})" if gate.verdict == "inconclusive" else ""
        parts.append(f"{VERDICT_MARKS[gate.verdict]} {GATE_LABELS[gate.gate]} {value} {threshold}{samples}")
    return " · ".join(parts)


def quality_verdict(release: ReleaseState) -> str:
    """fail when a quality gate fails, pass when every one passes, else inconclusive (none yet counts too)."""
    verdicts = [g.verdict for g in release.analysis if g.gate in QUALITY_GATES]
    if "fail" in verdicts:
        return "fail"
    return "pass" if verdicts and all(v == "pass" for v in verdicts) else "inconclusive"


def arm_line(name: str, arm: ArmStats) -> str:
    return (f"{name:7} {arm.requests:>8} {_percent(arm.error_rate):>7} "
            f"{'-' if arm.p99_ms is None else f'{arm.p99_ms:.0f}ms':>8} "
            f"{'-' if arm.cost_per_request is None else f'${arm.cost_per_request:.5f}':>10} "
            f"{_score(arm.quality):>7} {arm.judged:>6} {arm.judge_errors:>6} {arm.judge_dropped:>7}")


ARMS_HEADER = f"{'ARM':7} {'REQUESTS':>8} {'ERR':>7} {'P99':>8} {'$/REQ':>10} {'QUALITY':>7} {'JUDGED':>6} " \
              f"{'JERR':>6} {'DROPPED':>7}"


def arms_text(release: ReleaseState) -> str:
    lines = [ARMS_HEADER]
    for name in ("stable", "canary"):
        if name in release.arms:
            lines.append(arm_line(name, release.arms[name]))
    return "\n".join(lines)


# ---- preconditions (Argo's) ---------------------------------------------------------------------


def _needs_release(s: ActionState) -> str | None:
    return None if s.release_phase is not None else "select a release in the Releases pane"


def can_promote(s: ActionState) -> str | None:
    if (missing := _needs_release(s)) is not None:
        return missing
    if s.release_aborted:
        return "release is aborted (retry first)"
    return None if s.release_phase in ("Paused", "Progressing") else f"release is {s.release_phase}"


def can_pause(s: ActionState) -> str | None:
    missing = _needs_release(s)
    return missing or (None if s.release_phase == "Progressing" else f"release is {s.release_phase}, not Progressing")


def can_resume(s: ActionState) -> str | None:
    missing = _needs_release(s)
    return missing or (None if s.release_phase == "Paused" else f"release is {s.release_phase}, not Paused")


def can_abort(s: ActionState) -> str | None:
    missing = _needs_release(s)
    return missing or (f"release is {s.release_phase}" if s.release_phase in ("Degraded", "Healthy") else None)


def can_retry(s: ActionState) -> str | None:
    missing = _needs_release(s)
    return missing or (None if s.release_phase == "Degraded" else f"release is {s.release_phase}, not Degraded")


def release_action_state(release: ReleaseState, readonly: bool = False) -> ActionState:
    return ActionState(readonly=readonly, state_loaded=True, release_phase=release.phase,
                       release_aborted=release.aborted)


# ---- the console's flow -------------------------------------------------------------------------


def _nothing(_: ConsoleHost, __: object) -> None:
    """The answer is one release; the next poll of the list (right after the write) shows it with its version."""


def _confirm_action(host: ConsoleHost, entry: Action, verb: str) -> None:
    picked = host.selected_release()
    if picked is None:
        return
    release, version = picked
    name, gateway = release.spec.name, host.gateway
    change = (f"{verb} release {name}: {release.phase}, step {step_position(release)} "
              f"{step_kind(release.spec, release.step_index)}, canary {release.actual_weight}% "
              f"(version {version}). Analysis: {analysis_summary(release)}")
    confirm_then_write(host, WriteRequest(
        title=entry.description,
        change=change,
        danger=entry.danger,
        confirm_name=name,
        operation=lambda reason: gateway.release_action(name, verb, version, reason),
        done=f"{verb}: release {name}",
        on_success=_nothing,
        warning="The canary's weight goes to 0 at once; its callers go back to stable." if verb == "abort" else "",
    ))


# ---- the CLI verbs ------------------------------------------------------------------------------


def _when(unix: float) -> str:
    return datetime.fromtimestamp(unix).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def releases_table(listing: ReleaseList) -> str:
    lines = [f"{'NAME':24} {'PHASE':11} {'STEP':7} {'KIND':24} {'CANARY':>6} {'DESIRED':>7} {'GATES':16}"]
    for r in listing.releases:
        gates = " ".join(f"{VERDICT_MARKS[g.verdict]}{g.gate}" for g in r.analysis) or "-"
        lines.append(f"{r.spec.name:24} {r.phase + ('*' if r.aborted else ''):11} {step_position(r):7} "
                     f"{step_kind(r.spec, r.step_index):24} {r.actual_weight:>5}% {r.desired_weight:>6}% {gates}")
    return "\n".join(lines)


def release_details(release: ReleaseState, version: int) -> str:
    spec = release.spec
    pause = f" ({duration(release.pause_left_s)} left)" if release.pause_left_s is not None else ""
    lines = [
        f"release {spec.name}: {release.phase}{' (aborted)' if release.aborted else ''}  state v{version}",
        f"pool {spec.pool}: stable {spec.stable} -> canary {spec.canary}",
        f"step {step_position(release)} {step_kind(spec, release.step_index)}{pause}, "
        f"in step {duration(release.time_in_step_s)}",
        f"canary weight {release.actual_weight}% (desired {release.desired_weight}%)",
    ]
    if release.message:
        lines.append(f"message: {release.message}")
    lines += ["", "analysis:", analysis_text(release), "", arms_text(release)]
    if release.history:
        lines += ["", "history (newest first):"]
        lines += [f"  {_when(t.time)}  {t.phase:11} step {t.step_index + 1}  {t.actor}: {t.reason}"
                  for t in sorted(release.history, key=lambda t: t.time, reverse=True)]
    return "\n".join(lines)


async def read_release(client: GatewayClient, name: str) -> tuple[ReleaseState, int]:
    """The release and the state version it was read at (what a write then names as its base version)."""
    listing = await client.releases()
    release = next((r for r in listing.releases if r.spec.name == name), None)
    if release is None:
        known = ", ".join(r.spec.name for r in listing.releases) or "none"
        raise AdminError(404, f"unknown release '{name}' (known: {known})", "not_found")
    return release, listing.version


async def cli_list(_: argparse.Namespace, client: GatewayClient) -> int:
    listing = await client.releases()
    say(f"state v{listing.version}, {len(listing.releases)} release(s)")
    if listing.releases:
        say(releases_table(listing))
    return 0


async def cli_show(args: argparse.Namespace, client: GatewayClient) -> int:
    release, version = await read_release(client, args.name)
    say(release_details(release, version))
    return 0


def _name_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the release's name, as `release list` shows it")


def _cli_write(verb: str) -> CliVerb:
    async def run(args: argparse.Namespace, client: GatewayClient) -> int:
        release, version = await read_release(client, args.name)
        refusal = ENTRIES[verb].precondition(release_action_state(release))
        if refusal:
            say(f"switchboard: cannot {verb} release {args.name}: {refusal}; nothing sent", err=True)
            return 1
        new = await client.release_action(args.name, verb, version, args.reason)
        say(f"{verb}: release {args.name} is now {new.phase}, step {step_position(new)} "
            f"{step_kind(new.spec, new.step_index)}, canary {new.actual_weight}% (sent on state v{version})")
        return 0

    return CliVerb(f"release {verb}", f"{VERB_HELP[verb]} (--reason required)", run, _name_argument)


def _judge_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--release", required=True, metavar="NAME", help="the release whose canary is judged")
    parser.add_argument("--gateway", metavar="URL", help="the gateway's admin URL (instead of a context)")
    parser.add_argument("--token-env", metavar="VAR", default="SWITCHBOARD_ADMIN_TOKEN",
                        help="with --gateway: the variable holding the admin token (default SWITCHBOARD_ADMIN_TOKEN)")


async def cli_judge(args: argparse.Namespace, client: GatewayClient) -> int:
    """Exit 0 pass, 1 fail, 2 unreachable (or refused), 3 inconclusive: an AnalysisTemplate Job's verdict."""
    try:
        release, version = await read_release(client, args.release)
    except SourceDown as exc:
        say(f"switchboard judge: {exc}", err=True)
        return JUDGE_UNREACHABLE
    except AdminError as exc:
        say(f"switchboard judge: refused ({exc.status}): {exc.message}", err=True)
        return JUDGE_UNREACHABLE
    say(f"release {release.spec.name}: {release.phase}, step {step_position(release)} (state v{version})")
    say(f"{'ARM':7} {'QUALITY':>7} {'JUDGED':>6} {'ERRORS':>6} {'DROPPED':>7}")
    for name in ("stable", "canary"):
        arm = release.arms.get(name)
        if arm is not None:
            say(f"{name:7} {_score(arm.quality):>7} {arm.judged:>6} {arm.judge_errors:>6} {arm.judge_dropped:>7}")
    gates = [g for g in release.analysis if g.gate in QUALITY_GATES]
    say("\n".join(gate_line(g) for g in gates) if gates else "no quality gate (no judge configured or no analysis yet)")
    verdict = quality_verdict(release)
    say(f"quality gate: {verdict}")
    return {"pass": JUDGE_PASS, "fail": JUDGE_FAIL}.get(verdict, JUDGE_INCONCLUSIVE)


# ---- the entries --------------------------------------------------------------------------------

VERB_HELP = {
    "promote": "promote a release to its next step",
    "promote-full": "promote a release to 100% at once, skipping the remaining steps and analysis",
    "pause": "pause a progressing release",
    "resume": "resume a paused release",
    "abort": "abort a release: the canary's weight goes to 0 at once (Degraded)",
    "retry": "retry an aborted (Degraded) release from its first step",
}


def _console(verb: str):  # type: ignore[no-untyped-def]
    def perform(host: ConsoleHost) -> None:
        _confirm_action(host, ENTRIES[verb], verb)

    return perform


def can_pause_or_resume(s: ActionState) -> str | None:
    if (missing := _needs_release(s)) is not None:
        return missing
    return None if s.release_phase in ("Progressing", "Paused") else f"release is {s.release_phase}"


def pause_or_resume(host: ConsoleHost) -> None:
    """One key for both, as the selected release's phase decides (Argo's dashboard shows one of the two)."""
    picked = host.selected_release()
    if picked is not None:
        verb = "resume" if picked[0].phase == "Paused" else "pause"
        _confirm_action(host, ENTRIES[verb], verb)


def _entry(verb: str, description: str, precondition, danger: Danger = Danger.WRITE,  # type: ignore[no-untyped-def]
           key: str | None = None, label: str = "") -> Action:
    return Action(f"release_{verb.replace('-', '_')}", description, key=key, label=label, danger=danger,
                  precondition=precondition, perform=_console(verb) if key else None, cli=_cli_write(verb))


ENTRIES: dict[str, Action] = {
    "promote": _entry("promote", "Promote the selected release to its next step", can_promote, key="P",
                      label="Promote"),
    "promote-full": _entry("promote-full", "Promote the selected release to 100% (skips steps and analysis)",
                           can_promote, key="F", label="Full"),
    "pause": _entry("pause", "Pause the selected release", can_pause),
    "resume": _entry("resume", "Resume the selected release", can_resume),
    "abort": _entry("abort", "Abort the selected release (canary weight to 0)", can_abort, Danger.DESTRUCTIVE,
                    key="A", label="Abort"),
    "retry": _entry("retry", "Retry the selected aborted release", can_retry, key="R", label="Retry"),
}

PAUSE_RESUME = Action("release_pause_resume", "Pause the selected release when Progressing, resume it when Paused",
                      key="s", label="Pause/Resume", danger=Danger.WRITE, precondition=can_pause_or_resume,
                      perform=pause_or_resume)

ACTIONS: Sequence[Action] = (  # the key bar's order: promote, full, pause/resume, abort, retry
    ENTRIES["promote"], ENTRIES["promote-full"], PAUSE_RESUME, ENTRIES["pause"], ENTRIES["resume"], ENTRIES["abort"],
    ENTRIES["retry"],
    Action("release_list", "Canary releases: phase, step, weights, gates",
           cli=CliVerb("release list", "canary releases: phase, step, canary weight, gate verdicts", cli_list)),
    Action("release_show", "One canary release in full",
           cli=CliVerb("release show", "one release: step, weights, gates, arms, history", cli_show,
                       _name_argument)),
    Action("judge", "The canary's LLM-judge quality against stable's",
           cli=CliVerb("judge", "the arms' judge quality and the quality gate; exit 0 pass, 1 fail, "
                       "2 unreachable, 3 inconclusive (for an Argo AnalysisTemplate Job)", cli_judge,
                       _judge_arguments)),
)

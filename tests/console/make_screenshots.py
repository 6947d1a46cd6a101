"""Regenerates the console's screenshots (SVG) in ``screenshots/`` from the real app with fixed data.

Run by ``make screenshots``; from the repository root: ``python tests/console/make_screenshots.py [OUT_DIR]``.
The data are the snapshot tests' (tests/console/sample_data.py): no network, a frozen clock, so the
files change only when the console's look does.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from console.app import PANE_IDS, SwitchboardApp  # noqa: E402
from console.sources.poller import Health, Observed  # noqa: E402
from tests.console.bench_data import bench_runs  # noqa: E402
from tests.console.sample_data import NOW, feed_cluster, seed_cluster, snapshot_app  # noqa: E402
from tests.console.test_releases_rollouts import TO_THE_ROLLOUT, rollouts_cluster  # noqa: E402

WIDE = (120, 40)
SHORT = (120, 28)  # under 30 rows the pane jumped to fills the screen: one pane's shot at full width


def digit(pane_id: str) -> str:
    return str((PANE_IDS.index(pane_id) + 1) % 10)


def seed_scenario(app: SwitchboardApp) -> None:
    """The seed's cluster: a crash-looping pod, a GPU pod that cannot be scheduled, an HPA at its maximum."""
    feed_cluster(app, seed_cluster(time.time()))


def paused_rollout(app: SwitchboardApp) -> None:
    """Argo Rollout ai-api paused at 10% with a background analysis (the Releases pane's snapshot test's data)."""
    feed_cluster(app, rollouts_cluster())


def past_runs(app: SwitchboardApp) -> None:
    app.receive(Observed("bench", bench_runs(), NOW - 2.1, Health.LIVE))


@dataclass(frozen=True)
class Shot:
    name: str
    title: str
    size: tuple[int, int] = WIDE
    keys: tuple[str, ...] = ()
    app: dict[str, object] = field(default_factory=dict)
    feeds: tuple[Callable[[SwitchboardApp], None], ...] = ()  # data beyond sample_data's, given before the keys


SHOTS = (
    Shot("console-live", "Switchboard: live"),
    Shot("console-routing-staged", "Switchboard: a staged weight change", keys=("2", "plus", "plus", "down", "minus")),
    Shot("console-confirm-prod", "Switchboard: confirm on a prod context", keys=("2", "plus", "plus", "a"),
         app={"prod": True}),
    Shot("console-stale", "Switchboard: a hung gateway and a dead engine", app={"feed": "stale"}),
    Shot("console-readonly", "Switchboard: read-only", keys=("2",), app={"readonly": True}),
    Shot("console-help", "Switchboard: keys", keys=("question_mark",)),
    Shot("console-80x24", "Switchboard at 80x24", size=(80, 24), keys=("2", "plus")),
    Shot("console-providers-80x24", "Switchboard at 80x24: TTFT and total latency apart", size=(80, 24)),
    Shot("console-keys-80x24", "Switchboard at 80x24: client keys", size=(80, 24), keys=("5",)),
    Shot("console-injection", "Switchboard: escape sequences from a server, drawn harmless", app={"feed": "hostile"}),
    Shot("console-releases", "Switchboard: canary releases", keys=("6",)),
    Shot("console-release-abort-prod", "Switchboard: abort a release on a prod context", keys=("6", "down", "A"),
         app={"prod": True}),
    Shot("console-releases-80x24", "Switchboard at 80x24: a rolled-back release", size=(80, 24),
         keys=("6", "down", "down")),
    Shot("console-gpu-pods", "Switchboard: GPU pods on the seed scenario", size=SHORT, keys=(digit("gpu-pods"),),
         feeds=(seed_scenario,)),
    Shot("console-autoscaling", "Switchboard: an HPA at its maximum, and why", size=SHORT,
         keys=(digit("autoscaling"),), feeds=(seed_scenario,)),
    Shot("console-rollouts", "Switchboard: an Argo Rollout paused at 10%, after the gateway's releases", size=SHORT,
         keys=(digit("releases"), *TO_THE_ROLLOUT), feeds=(paused_rollout,)),
    Shot("console-queue", "Switchboard: the batch queue", size=SHORT, keys=(digit("queue"),)),
    Shot("console-benchmarks", "Switchboard: past benchmark runs", size=SHORT, keys=(digit("benchmarks"),),
         feeds=(past_runs,)),
)


async def take(shot: Shot, out: Path) -> Path:
    app = snapshot_app(**shot.app)  # type: ignore[arg-type]
    for feed in shot.feeds:
        feed(app)
    async with app.run_test(size=shot.size) as pilot:
        await pilot.press(*shot.keys)
        await pilot.pause()
        path = out / f"{shot.name}.svg"
        path.write_text(app.export_screenshot(title=shot.title))
    return path


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else REPO_ROOT / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    for shot in SHOTS:
        print(asyncio.run(take(shot, out)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

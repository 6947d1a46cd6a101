"""NO_COLOR (https://no-color.org): with the variable set, Textual draws the console in greys only, so every state
that colour marks must also read in words or marks: a crash-looping pod, an HPA at its maximum, a Degraded and
aborted rollout, a source that is DOWN. Checked on the drawn screen (the SVG export, which passes the app's line
filters as the terminal does) of the seed-like sample data."""

from __future__ import annotations

import re
import time

import pytest

from console.app import PANE_IDS, SwitchboardApp
from console.panes import ReleasesPane
from console.sources.kube import KubeSnapshot
from tests.console.pilot_helpers import wait_for
from tests.console.sample_data import feed_cluster, kube_snapshot, seed_cluster, snapshot_app
from tests.console.test_releases_rollouts import GATEWAY_RELEASES, rollouts_cluster
from tests.console.test_sanitize import drawn_text

pytestmark = pytest.mark.anyio
SIZE = (80, 24)  # the active pane fills the screen; the others keep their title lines (and so their health)
CSS_RULE = re.compile(r"\.terminal-[\w-]+ \{([^}]*)\}")
HEX = re.compile(r"#([0-9a-fA-F]{6})")
NEAR_GREY = 3  # the SVG theme's default foreground, #c5c8c6, is a grey within 3 levels


def digit(pane: str) -> str:
    return str(PANE_IDS.index(pane) + 1)


def seed_with_rollouts(wall: float) -> KubeSnapshot:
    """The seed's ai-prod (a crash-looping pod, ai-api-hpa at 20 of 20) plus ai-api paused and web aborted."""
    objects = {kind: list(state.objects.values()) for kind, state in seed_cluster(wall).kinds.items()}
    for kind, state in rollouts_cluster(degraded=True).kinds.items():
        objects[kind] = objects.get(kind, []) + list(state.objects.values())
    return kube_snapshot(objects)


def nocolor_app(monkeypatch: pytest.MonkeyPatch) -> SwitchboardApp:
    monkeypatch.setenv("NO_COLOR", "1")  # read (and removed from the environment) when the app is built
    app = snapshot_app(feed="stale")  # the engine is DOWN, the gateway's sources STALE
    feed_cluster(app, seed_with_rollouts(time.time()))
    return app


def colours(svg: str) -> set[str]:
    """The colours the screen's cells are drawn in (the CSS rules of the export, not its window frame)."""
    return {found.lower() for rule in CSS_RULE.findall(svg) for found in HEX.findall(rule)}


def is_grey(hex_colour: str) -> bool:
    channels = [int(hex_colour[at:at + 2], 16) for at in (0, 2, 4)]
    return max(channels) - min(channels) <= NEAR_GREY


def screen(app: SwitchboardApp) -> str:
    svg = app.export_screenshot()
    hues = sorted(c for c in colours(svg) if not is_grey(c))
    assert hues == [], f"NO_COLOR is set, yet the screen has colours {hues}"
    return drawn_text(svg)


async def test_with_no_color_every_coloured_state_still_reads_in_words(monkeypatch: pytest.MonkeyPatch) -> None:
    app = nocolor_app(monkeypatch)
    assert app.no_color
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(digit("gpu-pods"))
        await pilot.pause()
        gpu = screen(app)
        assert "ai-api-6d5f7c9b8-klmno" in gpu and "! 0/1 CrashLoopBackOff" in gpu, gpu
        assert "! 0/1 Unschedulable" in gpu, gpu
        assert "3 Engine DOWN" in gpu, gpu  # a DOWN source says so in its title, whichever pane is active
        await pilot.press(digit("autoscaling"))
        await pilot.pause()
        hpa = screen(app)
        assert "HPA ai-api-hpa" in hpa and "AT MAX" in hpa, hpa
        await pilot.press(digit("releases"), *["down"] * (GATEWAY_RELEASES + 1))
        pane = app.query_one(ReleasesPane)
        await wait_for(pilot, lambda: pane.selected_release == "rollout:ai-prod/web", what="the aborted rollout")
        await pilot.pause()
        releases = screen(app)
        assert re.search(r"web +✖ Degraded", releases), releases  # the list row: icon and word
        assert "» RolloutAborted: Rollout aborted update to revision 3" in releases, releases
        assert "ai-api            ॥ Paused" in releases and "sonnet-4-1        ✖ Degraded" in releases, releases


async def test_without_no_color_the_same_screen_has_colours(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above can fail: the console is in colour when NO_COLOR is not set."""
    monkeypatch.delenv("NO_COLOR", raising=False)
    app = snapshot_app(feed="stale")
    feed_cluster(app, seed_with_rollouts(time.time()))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(digit("gpu-pods"))
        await pilot.pause()
        assert not app.no_color
        assert any(not is_grey(c) for c in colours(app.export_screenshot()))

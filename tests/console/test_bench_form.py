"""Benchmarks launched from the console: ``b`` opens the form, a preset from the context fills it, a wrong field is
named and nothing is sent; Run drives the built-in load generator against the OpenAI stand-in over loopback as a
worker, its progress shows in the Benchmarks pane's live line, the saved run lands in the pane, and ``b`` cancels a
run in progress (it stops sending; what was measured is saved, marked cancelled). Read-only hides ``b``.

Runs are stored under a temporary ``$XDG_DATA_HOME`` (the store's default directory)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from textual.widgets import Input, Select, Static

from console.app import PANE_IDS, SwitchboardApp, create_app
from console.bench_screen import BenchFormScreen
from console.contexts import Context
from console.panes.benchmarks import BenchmarksPane
from console.views.bench_form import BenchPreset
from services.bench.store import RunStore
from tests.console.pilot_helpers import type_text, wait_for
from tests.standins.server import Fault, Standin

pytestmark = pytest.mark.anyio
NO_GATEWAY = "http://127.0.0.1:9"  # nothing listens: the gateway's panes read DOWN, the benchmark does not care
KEY_ENV = "SB_BENCH_FORM_KEY"
SIZE = (120, 40)
WITHIN_S = 30.0
REPLY = "one two three four five six seven eight"


@pytest.fixture(autouse=True)
def _data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv(KEY_ENV, "sk-bench-form-test")


@pytest.fixture
def server() -> Any:
    standin = Standin(name="bench-model", reply=REPLY).start()
    yield standin
    standin.stop()


def presets(**override: Any) -> dict[str, BenchPreset]:
    quick = {"target": "backend", "api_key_env": KEY_ENV, "input_len": 8, "output_len": 4, "num_prompts": 6,
             "concurrency": 2, "label": "quick"}
    quick.update(override)
    return {"quick": BenchPreset.model_validate(quick), "other": BenchPreset(target="gateway", num_prompts=3)}


def console(server: Standin, readonly: bool = False, **preset: Any) -> SwitchboardApp:
    context = Context(name="bench-test", admin_url=NO_GATEWAY, token_env=None, engine_url=server.url,
                      poll_interval_s=0.5, timeout_s=0.5, bench_presets=presets(**preset))
    return create_app(context, operator="alice@bastion", readonly=readonly, down_after_s=60.0)


def plain(renderable: object) -> str:
    console = Console(width=118, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def sent(server: Standin) -> list[Any]:
    """The benchmark's requests (the engine pane polls the stand-in's /metrics as well)."""
    return [r for r in server.requests if r.path.endswith("completions")]


def form(app: SwitchboardApp) -> BenchFormScreen:
    screen = app.screen
    assert isinstance(screen, BenchFormScreen), f"the form is not open: {screen!r}"
    return screen


async def pick_preset(pilot: Any, app: SwitchboardApp, name: str) -> None:
    """Open the preset list with the keyboard and choose ``name`` (the names are listed sorted)."""
    select = form(app).query_one("#bench-preset", Select)
    select.focus()
    await pilot.press("enter")
    for _ in range(sorted(app.bench.presets).index(name) + 1):
        await pilot.press("down")
    await pilot.press("enter")
    await wait_for(pilot, lambda: form(app).values()["preset"] == name, WITHIN_S, f"preset {name}")


async def open_form(pilot: Any, app: SwitchboardApp) -> None:
    await pilot.press("b")
    await wait_for(pilot, lambda: isinstance(app.screen, BenchFormScreen), WITHIN_S, "the benchmark form")


def live_line(app: SwitchboardApp) -> str:
    return str(app.query_one("#bench-status", Static).render())


async def test_b_opens_the_form_and_a_preset_fills_it(server: Standin) -> None:
    app = console(server)
    async with app.run_test(size=SIZE) as pilot:
        await open_form(pilot, app)
        values = form(app).values()
        assert values["target"] == "gateway" and values["base_url"] == NO_GATEWAY  # the admin URL: no stack record
        await pick_preset(pilot, app, "quick")
        values = form(app).values()
        assert (values["target"], values["base_url"], values["api_key_env"]) == ("backend", server.url, KEY_ENV)
        assert (values["input_len"], values["output_len"], values["num_prompts"], values["concurrency"]) == (
            "8", "4", "6", "2")
        assert values["label"] == "quick"
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, BenchFormScreen), WITHIN_S, "the form to close")
        assert not app.bench.running and sent(server) == []


async def test_a_wrong_field_is_named_focused_and_nothing_is_sent(server: Standin) -> None:
    app = console(server)
    async with app.run_test(size=SIZE) as pilot:
        await open_form(pilot, app)
        await pick_preset(pilot, app, "quick")
        prompts = form(app).query_one("#bench-num_prompts", Input)
        prompts.focus()
        prompts.value = ""
        await type_text(pilot, "lots")
        await pilot.press("enter")
        error = form(app).query_one("#bench-error", Static)
        await wait_for(pilot, lambda: "Prompts: 'lots' is not a whole number" in str(error.render()), WITHIN_S,
                       "the error")
        assert app.focused is prompts
        key = form(app).query_one("#bench-api_key_env", Input)
        key.value = "SB_BENCH_FORM_UNSET"
        prompts.value = "6"
        await pilot.press("enter")
        await wait_for(pilot, lambda: "$SB_BENCH_FORM_UNSET is not set" in str(error.render()), WITHIN_S,
                       "the unset key variable named")
        assert app.focused is key
        assert not app.bench.running and sent(server) == [] and RunStore().ids() == []


async def test_a_run_from_the_form_shows_progress_and_lands_in_the_pane(server: Standin) -> None:
    server.set_default(Fault.paced(first_s=0.05, gap_s=0.05))
    app = console(server)
    async with app.run_test(size=SIZE) as pilot:
        await open_form(pilot, app)
        await pick_preset(pilot, app, "quick")
        seen: list[str] = []
        await pilot.click("#bench-run")
        pane = app.query_one(BenchmarksPane)

        def progressed() -> bool:
            seen.append(live_line(app))
            return "/6 done" in seen[-1]

        await wait_for(pilot, progressed, WITHIN_S, "the live progress line")
        assert app.active_pane == "benchmarks"
        await wait_for(pilot, lambda: len(pane.body.row_keys) == 1, WITHIN_S, "the run in the pane")
        line = next(text for text in seen if "/6 done" in text)
        assert line.startswith("quick: ") and "tok/s" in line and "TTFT p50" in line and "ITL p50" in line
        assert line.endswith("b cancels")
        run_id = pane.body.row_keys[0]
        assert RunStore().ids() == [run_id]
        assert pane.body.get_cell(run_id, "done") == "6/6"
        assert live_line(app).startswith("quick finished: 6 requests, 1 run saved")
        saved = RunStore().load(run_id)
        assert saved.spec.base_url == server.url and saved.spec.api_key_env == KEY_ENV
        assert saved.target.model == "bench-model" and not saved.cancelled
        assert len(sent(server)) == 6
        assert all(r.headers["authorization"] == "Bearer sk-bench-form-test" for r in sent(server))
        assert "sk-bench-form-test" not in RunStore().path(run_id).read_text()  # the key's name only, never the key


async def test_b_cancels_the_run_in_progress(server: Standin) -> None:
    server.set_default(Fault.paced(first_s=0.2, gap_s=0.2))
    app = console(server, num_prompts=400, concurrency=2, label="long")
    async with app.run_test(size=SIZE) as pilot:
        await open_form(pilot, app)
        await pick_preset(pilot, app, "quick")
        form(app).query_one("#bench-label", Input).focus()
        await pilot.press("enter")  # enter in a field runs the form
        await wait_for(pilot, lambda: app.bench.running and "done" in live_line(app) and sent(server), WITHIN_S,
                       "the run to start")
        await pilot.press("b")  # while a run goes, b cancels it (no form)
        await wait_for(pilot, lambda: not app.bench.running, WITHIN_S, "the run to stop")
        assert not isinstance(app.screen, BenchFormScreen)
        count = len(sent(server))
        pane = app.query_one(BenchmarksPane)
        await wait_for(pilot, lambda: len(pane.body.row_keys) == 1, WITHIN_S, "the cancelled run in the pane")
        run_id = pane.body.row_keys[0]
        assert pane.body.get_cell(run_id, "note") == "cancelled"
        assert RunStore().load(run_id).cancelled
        assert "long cancelled" in live_line(app)
        assert 0 < count < 40  # two at a time, stopped within a few requests, far from the 400 asked for
        assert app.notices[-1][:2] == ("warning", "Benchmark")


async def test_read_only_hides_b(server: Standin) -> None:
    app = console(server, readonly=True)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(str((PANE_IDS.index("benchmarks") + 1) % 10))
        await pilot.press("b")
        await pilot.pause(0.1)
        assert app.availability("bench") is False
        assert not isinstance(app.screen, BenchFormScreen)
        assert not any(entry[0] == "bench" for entry in app.palette_entries())
        await pilot.press("question_mark")
        help_text = plain(app.screen.query_one("#help-actions", Static).content)
        assert "Refresh every source now" in help_text and "Benchmark" not in help_text


async def test_a_run_that_cannot_start_says_why_and_saves_nothing(server: Standin) -> None:
    app = console(server, target=NO_GATEWAY, label="nowhere")
    async with app.run_test(size=SIZE) as pilot:
        await open_form(pilot, app)
        await pick_preset(pilot, app, "quick")
        await pilot.click("#bench-run")
        await wait_for(pilot, lambda: "nowhere failed:" in live_line(app), WITHIN_S, "the failure in the live line")
        assert not app.bench.running and RunStore().ids() == []
        severity, title, message = app.notices[-1]
        assert (severity, title) == ("error", "Benchmark") and message.startswith("nowhere failed: ")
        assert "127.0.0.1:9" in message

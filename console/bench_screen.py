"""The benchmark form (``b``): a modal over the console that turns its fields into a ``BenchSpec``.

Fields: a named preset from the context's ``bench_presets`` (it fills the rest), the target (the gateway with a
client key from an environment variable, the backend directly, or any URL), the runner, the endpoint and model, the
dataset, input and output lengths, concurrency, request rate or a sweep of rates, the number of prompts, SLOs for
goodput and a label. Run checks the fields (console.views.bench_form) and dismisses with the spec; a wrong field is
named in the form, focused, and nothing is sent. The form shows only names of variables, never a key.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Button, Input, Label, Select, Static

from console.actions.bench import BenchDesk
from console.screens import context_badge
from console.text import safe_text
from console.views.bench_form import (
    DATASETS,
    DEFAULT_KEY_ENV,
    ENDPOINTS,
    RUNNERS,
    TARGETS,
    FormError,
    form_values,
)
from services.bench.spec import BenchSpec

CHOICES = {"target": TARGETS, "runner": RUNNERS, "endpoint": ENDPOINTS, "dataset": DATASETS}
ROWS: tuple[tuple[tuple[str, str, int], ...], ...] = (  # (field id, label, width of the field; 0: the rest)
    (("preset", "Preset", 18), ("runner", "Runner", 13), ("endpoint", "Endpoint", 0)),
    (("target", "Target", 13), ("base_url", "URL", 0)),
    (("api_key_env", "Key env", 20), ("model", "Model", 0)),
    (("dataset", "Dataset", 13), ("dataset_path", "Path", 0)),
    (("input_len", "Input len", 7), ("output_len", "Output len", 7), ("num_prompts", "Prompts", 0)),
    (("concurrency", "Concurrency", 5), ("request_rate", "Rate/s", 6), ("sweep_rates", "Sweep rates", 0)),
    (("slo_ttft", "SLO ms TTFT", 7), ("slo_tpot", "TPOT", 7), ("slo_e2el", "E2EL", 0)),
    (("label", "Label", 0),),
)
PLACEHOLDERS = {"model": "first served", "dataset_path": "jsonl or ShareGPT file", "concurrency": "∞",
                "sweep_rates": "e.g. 1, 2, 4", "slo_ttft": "-", "slo_tpot": "-", "slo_e2el": "-",
                "api_key_env": "none", "label": "letters, digits, - _ ."}


class BenchFormScreen(ModalScreen[BenchSpec | None]):
    """Dismisses with the spec to run, or None when closed."""

    DEFAULT_CSS = """
    BenchFormScreen { align: center middle; }
    BenchFormScreen > #bench-dialog {
        width: 78; max-width: 100%; height: auto; max-height: 100%;
        border: thick $accent; background: $surface; padding: 0 1;
    }
    BenchFormScreen .bench-row { height: 1; }
    BenchFormScreen .bench-row Label { padding: 0 1 0 0; color: $text-muted; }
    BenchFormScreen .bench-row Label.-later { padding: 0 1 0 2; }
    BenchFormScreen #bench-error { color: $error; text-style: bold; height: auto; margin-top: 1; }
    BenchFormScreen #bench-buttons { height: 1; align-horizontal: right; }
    BenchFormScreen Button { margin-left: 2; min-width: 10; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "Close")]
    AUTO_FOCUS = "#bench-base_url"

    def __init__(self, desk: BenchDesk, context: str, color: str, prod: bool) -> None:
        super().__init__()
        self.desk = desk
        self.where = context_badge(context, color, prod)
        self.initial = form_values(desk.targets)

    def compose(self) -> ComposeResult:
        with Vertical(id="bench-dialog") as dialog:
            dialog.border_title = Text.assemble("Benchmark · context ", self.where)
            dialog.border_subtitle = "Enter: run · Esc: close"
            for row in ROWS:
                with Horizontal(classes="bench-row"):
                    for index, (field, label, width) in enumerate(row):
                        yield Label(label, classes="-later" if index else "")
                        widget = self._field(field)
                        widget.styles.width = width if width else "1fr"
                        yield widget
            yield Static(id="bench-error")
            with Horizontal(id="bench-buttons"):
                yield Button("Close", id="bench-close", compact=True)
                yield Button("Run", id="bench-run", variant="primary", compact=True)

    def _field(self, field: str) -> Widget:
        value = self.initial[field]
        if field == "preset":
            presets = [(safe_text(name), name) for name in sorted(self.desk.presets)]
            return Select(presets, prompt="none", id="bench-preset", compact=True, disabled=not presets)
        if field in CHOICES:
            return Select([(choice, choice) for choice in CHOICES[field]], value=value, allow_blank=False,
                          id=f"bench-{field}", compact=True)
        return Input(value, placeholder=PLACEHOLDERS.get(field, ""), id=f"bench-{field}", compact=True,
                     max_length=500)

    # ---- reading and filling the fields ---------------------------------------------------------------

    def values(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for field in self.initial:
            widget = self.query_one(f"#bench-{field}")
            value: Any = widget.value  # type: ignore[attr-defined]
            out[field] = "" if value is Select.NULL else str(value)
        return out

    def fill(self, values: dict[str, str]) -> None:
        for field, value in values.items():
            if field == "preset":
                continue
            widget = self.query_one(f"#bench-{field}")
            widget.value = value  # type: ignore[attr-defined]

    @on(Select.Changed, "#bench-preset")
    def _preset(self, event: Select.Changed) -> None:
        name = event.value
        if isinstance(name, str) and name in self.desk.presets:
            self.fill(form_values(self.desk.targets, self.desk.presets[name], name))

    @on(Select.Changed, "#bench-target")
    def _target(self, event: Select.Changed) -> None:
        """Gateway and backend fill in their URL; the key's variable follows unless one was typed."""
        target = str(event.value)
        url, key = self.query_one("#bench-base_url", Input), self.query_one("#bench-api_key_env", Input)
        if target in ("gateway", "backend") and (filled := self.desk.targets.url(target)):
            url.value = filled
        if target == "backend" and key.value == DEFAULT_KEY_ENV:
            key.value = ""
        elif target == "gateway" and not key.value:
            key.value = DEFAULT_KEY_ENV

    # ---- run or close ---------------------------------------------------------------------------------

    @on(Input.Submitted)
    @on(Button.Pressed, "#bench-run")
    def action_run(self, event: Input.Submitted | Button.Pressed | None = None) -> None:
        if event is not None:
            event.stop()
        try:
            spec = self.desk.spec_from(self.values())
        except FormError as exc:
            self.query_one("#bench-error", Static).update(safe_text(str(exc)))
            self.query_one(f"#bench-{exc.field}").focus()
            return
        self.dismiss(spec)

    @on(Button.Pressed, "#bench-close")
    def action_close(self) -> None:
        self.dismiss(None)

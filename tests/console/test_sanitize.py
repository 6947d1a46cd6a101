"""The console's one sanitizer (console/text.py): no server string may drive the terminal.

The unit tests check the characters themselves; the Pilot test at the end feeds hostile strings into
every pane through ``app.receive`` (the pollers' path) and reads the whole rendered screen.
"""

from __future__ import annotations

import html
import re
import unicodedata
from io import StringIO

import pytest
from rich.cells import cell_len
from rich.console import Console
from rich.text import Text
from textual.app import App

from console.text import ESCAPE_STYLE, clean, escape, safe_text
from services.admin_api import unsafe_character
from tests.console.sample_data import KeysPaneApp, hostile_keys, snapshot_app

CLEAR_SCREEN = "\x1b[2J"
CURSOR_HOME = "\x1b[H"
WINDOW_TITLE = "\x1b]0;PWNED\x07"
CLIPBOARD = "\x1b]52;c;cGF5bG9hZA==\x07"
RLO = "\u202e"
HOSTILE = f"a{CLEAR_SCREEN}b{WINDOW_TITLE}c{CLIPBOARD}d{RLO}e{CURSOR_HOME}f\r\x08\x9b\x7f\u2028\u2066"

BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


def unsafe(value: str) -> list[str]:
    """Every character of ``value`` a terminal could act on, as the gateway's own validator sees them."""
    return [char for char in value if unsafe_character(char) is not None or unicodedata.category(char) == "Cs"]


def test_every_control_bidi_and_separator_character_is_escaped() -> None:
    candidates = [chr(code) for code in range(0x3000)] + [chr(code) for code in range(0xD800, 0xE000)]
    flagged = [char for char in candidates if unsafe(char)]
    assert len(flagged) == 0x20 + 1 + 0x20 + len(BIDI) + 2 + 0x800  # C0, DEL, C1, bidi, U+2028/9, surrogates
    for char in candidates:
        assert unsafe(clean(char)) == [], f"U+{ord(char):04X} survived as {clean(char)!r}"
    for char in flagged:
        assert clean(char) != char, f"U+{ord(char):04X} was let through"


def test_escapes_are_visible_and_name_what_was_there() -> None:
    assert clean(CLEAR_SCREEN) == "␛[2J"
    assert clean(WINDOW_TITLE) == "␛]0;PWNED␇"
    assert clean(CLIPBOARD) == "␛]52;c;cGF5bG9hZA==␇"
    assert clean("a\rb\x08c\td\ne\x7f") == "a␍b␈c␉d␊e␡"
    assert clean("x\x9b2J") == "x<U+009B>2J"
    assert clean(f"invoice{RLO}fdp.exe") == "invoice<U+202E>fdp.exe"
    assert clean("\u2028\u2029\u2066\u061c") == "<U+2028><U+2029><U+2066><U+061C>"
    assert clean("\ud800") == "<U+D800>"  # a lone surrogate cannot even be encoded for the terminal
    assert escape("\x1b") == "␛"


@pytest.mark.parametrize("value", ["", "plain ascii", "café ☕ 東京 “quoted” 🚀", "zero\u200dwidth", "a\u00a0b"])
def test_clean_strings_come_back_untouched(value: str) -> None:
    assert clean(value) is value
    text = Text(value, style="bold")
    assert safe_text(text) is text
    assert safe_text(value, style="red") == Text(value, style="red")


def test_safe_text_from_a_string_keeps_what_rich_would_silently_drop() -> None:
    # Rich's Text() removes BEL, CR and backspace; the escape must still show they were there.
    assert Text("a\x07b\rc\x08").plain == "abc"
    text = safe_text("a\x07b\rc\x08", style="bold")
    assert text.plain == "a␇b␍c␈"
    assert text.style == "bold"
    assert [(span.start, span.end, span.style) for span in text.spans] == [
        (1, 2, ESCAPE_STYLE), (3, 4, ESCAPE_STYLE), (5, 6, ESCAPE_STYLE)]


def test_safe_text_keeps_the_styles_around_the_escapes() -> None:
    source = Text.assemble(("pool ", "bold"), (f"chat{CLEAR_SCREEN}", "red"), " tail")
    text = safe_text(source)
    assert text.plain == "pool chat␛[2J tail"
    assert text.get_style_at_offset(Console(), 0).bold
    assert text.get_style_at_offset(Console(), 5).color.name == "red"  # "chat" keeps its colour
    assert text.get_style_at_offset(Console(), 9).reverse  # the ESC picture is highlighted
    assert text.get_style_at_offset(Console(), 10).color.name == "red"  # "[2J" keeps its colour
    assert source.plain == f"pool chat{CLEAR_SCREEN} tail", "the source Text is not modified"


def test_rendered_output_carries_no_escape_sequence_from_the_string() -> None:
    out = StringIO()
    console = Console(file=out, force_terminal=True, color_system=None, width=200, legacy_windows=False)
    console.print(safe_text(HOSTILE), end="")
    written = out.getvalue()
    assert written.count("\x1b") == written.count("\x1b[7m"), "only the escape highlight (reverse) may be emitted"
    assert "\x07" not in written and "\r" not in written and RLO not in written
    assert "]0;PWNED" in written and "]52;c;cGF5bG9hZA==" in written  # visible as text, inert


# ---- every pane, rendered ------------------------------------------------------------------------------

TEXT_ELEMENT = re.compile(r'<text class="[^"]*" x="([\d.]+)" y="[\d.]+" textLength="([\d.]+)" '
                          r'clip-path="url\(#[^)]*-line-(\d+)\)">([^<]*)</text>')


def drawn_text(svg: str) -> str:
    """The screen a screenshot shows, as lines of text (rebuilt from the positions of its <text> elements)."""
    lines: dict[int, dict[int, str]] = {}
    for x, length, row, raw in TEXT_ELEMENT.findall(svg):
        text = html.unescape(raw).replace("\xa0", " ")
        if text == "\n":  # Rich exports each line's end too
            continue
        cell = float(length) / max(cell_len(text), 1)
        lines.setdefault(int(row), {})[round(float(x) / cell)] = text
    screen = []
    for row in sorted(lines):
        line = ""
        for column, text in sorted(lines[row].items()):
            line = line.ljust(column) + text
        screen.append(line)
    return "\n".join(screen)


async def screen_of(app: App[object], size: tuple[int, int]) -> str:
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        return drawn_text(app.export_screenshot())


@pytest.mark.anyio
async def test_every_pane_draws_hostile_strings_as_visible_escapes() -> None:
    drawn = await screen_of(snapshot_app(feed="hostile"), (120, 66))
    assert unsafe(drawn.replace("\n", "")) == []
    for visible in (
        "mini␛[2Jx",  # target name: Providers and Routing
        "haiku<U+202E>gnp",  # bidi override in a target name
        "chat␛[H",  # pool name
        "v9 by eve␛]0;PWNED␇",  # Routing title: who changed it last
        "eve␛]0;PWNED␇",  # audit operator
        "␛]52;c;cGF5bG9hZA==␇",  # audit reason: an OSC 52 clipboard write
        "drain␛[2J",  # audit action
        "reason␛[H<U+202E>tail",
        "a␛]52;c;cGF5bG9hZA==␛\\ -> b",  # audit change
        "Audit STALE 7s · boom␛[2J␛]0;PWNED␇",  # an error message in a title
        "boom␛[2J␛]0;PWNED␇␛]52;c;cGF5bG9hZA==␇<U+202",  # and in the Engine pane's body
        "plain-target", "an ordinary reason",  # the rest is untouched
    ):
        assert visible in drawn, f"{visible!r} is not on the screen:\n{drawn}"


@pytest.mark.anyio
async def test_keys_pane_draws_hostile_strings_as_visible_escapes() -> None:
    drawn = await screen_of(KeysPaneApp(hostile_keys()), (120, 8))
    assert unsafe(drawn.replace("\n", "")) == []
    for visible in ("bot␛[2J", "eve<U+202E>pwn", "sk␛]0;PWN", "support-bot"):
        assert visible in drawn, f"{visible!r} is not on the screen"


@pytest.mark.anyio
async def test_confirm_dialog_draws_hostile_names_as_visible_escapes() -> None:
    app = snapshot_app(prod=True, feed="hostile")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2", "plus", "a")  # the first row: pool chat<ESC>[H, target mini<ESC>[2Jx
        await pilot.pause()
        drawn = drawn_text(app.export_screenshot())
    assert unsafe(drawn.replace("\n", "")) == []
    assert "pool chat␛[H: mini␛[2Jx 60 -> 65" in drawn, drawn
    assert "Type chat␛[H to confirm" in drawn, drawn

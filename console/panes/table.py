"""A light keyed table for the panes: a header, rows kept by a stable key, a row cursor, scrolling.

Textual's DataTable re-renders every visible cell whenever one cell changes; a pane that refreshes
every second with twenty rows pays for that on every poll. This table renders a row to one Strip the first
time that row is drawn after its cells change, and otherwise only crops cached strips (Textual's Line API):
a refresh costs one Rich render per changed row on screen, however many rows lie below the fold.

Every cell and empty-table note is drawn through ``console.text.safe_text``: panes put server strings
(target, pool and key names, audit reasons, error messages) into tables, and the table is where they all
pass, so a new pane cannot forget to sanitize. Row keys are identities handed back to the app (a target
name a write is addressed to) and stay as the server sent them; they are never drawn.

Optionally a second header line labels groups of columns (``TTFT`` over p50/p99/EMA), and some columns
may be ``optional``: dropped, in the order given, while the table is wider than its widget (80 columns).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from console.text import clean, safe_text

Cell = str | Text
Row = tuple[str, Sequence[Cell]]
Column = tuple[str, str, int]  # label, key, width in cells
Group = tuple[str, str, str]  # label, first column key, last column key
GAP = 2  # cells between columns
SIDEWAYS_STEP = 10  # cells per left/right key
SCROLLBAR = 1  # the vertical scrollbar's width (CSS below): kept free so more rows never force sideways scrolling


class KeyedTable(ScrollView, can_focus=True):
    """Rows keyed by a stable string; ``sync`` keeps the cursor on the same key across refreshes."""

    DEFAULT_CSS = """
    KeyedTable { height: 1fr; scrollbar-size: 1 1; }
    KeyedTable > .keyed-table--header { text-style: bold; color: $text-muted; background: $panel; }
    KeyedTable > .keyed-table--cursor { background: $block-cursor-blurred-background; }
    KeyedTable:focus > .keyed-table--cursor { background: $block-cursor-background; text-style: bold; }
    """
    COMPONENT_CLASSES: ClassVar[set[str]] = {"keyed-table--header", "keyed-table--cursor"}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "first", "First row", show=False),
        Binding("end", "last", "Last row", show=False),
        Binding("left", "sideways(-1)", "Scroll left", show=False),
        Binding("right", "sideways(1)", "Scroll right", show=False),
    ]

    cursor_row: reactive[int] = reactive(0)

    class RowHighlighted(Message):
        """The cursor moved to another row (or the row under it changed key)."""

        def __init__(self, table: KeyedTable, key: str | None) -> None:
            super().__init__()
            self.table, self.key = table, key

    def __init__(self, columns: Sequence[Column], *, id: str | None = None, groups: Sequence[Group] = (),
                 optional: Sequence[str] = ()) -> None:
        super().__init__(id=id)
        self.columns = tuple(columns)
        self.groups = tuple(groups)
        self.optional = tuple(optional)  # column keys, dropped first to last while the widget is too narrow
        self.header_lines = 2 if self.groups else 1
        self._rows: list[Row] = []
        self._strips: list[Strip | None] = []  # None: not rendered since the row last changed
        self._empty_note: str | None = None
        self._header: list[Strip] | None = None
        self._shown = tuple(range(len(self.columns)))  # indexes of the columns drawn
        self._width = self._width_of(self._shown)

    # ---- data in --------------------------------------------------------------------------------

    @property
    def shown_columns(self) -> list[str]:
        """The keys of the columns drawn at the current width."""
        return [self.columns[i][1] for i in self._shown]

    @property
    def row_keys(self) -> list[str]:
        return [key for key, _ in self._rows]

    @property
    def cursor_key(self) -> str | None:
        if not self._rows:
            return None
        return self._rows[min(self.cursor_row, len(self._rows) - 1)][0]

    def get_cell(self, key: str, column: str) -> str:
        """The plain text of one cell as drawn (tests read the screen's content through this)."""
        index = next(i for i, (_, col, _) in enumerate(self.columns) if col == column)
        cells = next(cells for k, cells in self._rows if k == key)
        cell = cells[index]
        return safe_text(cell).plain if isinstance(cell, Text) else clean(str(cell))

    def move_to(self, key: str) -> bool:
        """Put the cursor on a row by key; False when there is no such row."""
        keys = self.row_keys
        if key not in keys:
            return False
        self.cursor_row = keys.index(key)
        return True

    def sync(self, rows: Sequence[Row]) -> None:
        rows = list(rows)
        keep = self.cursor_key
        same_keys = self._empty_note is None and [k for k, _ in rows] == self.row_keys
        if same_keys:
            changed = [i for i, (row, old) in enumerate(zip(rows, self._rows, strict=True)) if _row_differs(row, old)]
            if not changed:
                return
            for i in changed:
                self._strips[i] = None
                line = i + self.header_lines  # ScrollView takes the virtual line and subtracts the scroll
                if self.header_lines <= line - int(self.scroll_y) < self.size.height:  # on screen, below the header
                    self.refresh_line(line)
            self._rows = rows
            return
        self._empty_note = None
        self._rows = rows
        self._strips = [None] * len(rows)
        self._resize()
        if keep is not None and keep in self.row_keys:
            self.cursor_row = self.row_keys.index(keep)
        else:
            self.cursor_row = min(self.cursor_row, max(len(rows) - 1, 0))
        self.post_message(self.RowHighlighted(self, self.cursor_key))
        self.refresh()

    def show_empty(self, note: str) -> None:
        """One dim line saying why there is nothing to show."""
        if self._empty_note == note:
            return
        self._rows = []
        self._empty_note = note
        self._strips = [self._render_row([safe_text(note, style="dim")], span=True)]
        self._resize()
        self.refresh()

    # ---- rendering ------------------------------------------------------------------------------

    def _resize(self) -> None:
        self.virtual_size = Size(self._width, len(self._strips) + self.header_lines)

    def _width_of(self, shown: Sequence[int]) -> int:
        return sum(self.columns[i][2] + GAP for i in shown)

    def _fit(self, width: int) -> tuple[int, ...]:
        """The columns to draw in ``width`` cells: all, less optional ones while too wide (all before layout)."""
        keys = [key for _, key, _ in self.columns]
        shown = list(range(len(self.columns)))
        for key in self.optional:
            if width <= 0 or self._width_of(shown) <= width:
                break
            shown.remove(keys.index(key))
        return tuple(shown)

    def _render_row(self, cells: Sequence[Cell], span: bool = False) -> Strip:
        line = Text(no_wrap=True, end="")
        if span:
            line.append(" ")
            line.append_text(_safe_cell(cells[0]))
        else:
            for index in self._shown:
                width, text = self.columns[index][2], _safe_cell(cells[index])
                text.truncate(width, overflow="ellipsis", pad=True)
                line.append(" ")
                line.append_text(text)
                line.append(" ")
        segments = list(line.render(self.app.console))
        return Strip(segments, line.cell_len)

    def _header_strips(self) -> list[Strip]:
        if self._header is None:
            style = self.get_component_rich_style("keyed-table--header")
            labels = Text(no_wrap=True, end="")
            for index in self._shown:
                label, _, width = self.columns[index]
                labels.append(" " + label[:width].ljust(width) + " ")
            lines = [self._group_line(), labels] if self.groups else [labels]
            self._header = [Strip(list(line.render(self.app.console)), line.cell_len).apply_style(style)
                            for line in lines]
        return self._header

    def _group_line(self) -> Text:
        """``TTFT ─────────`` over the shown columns of each group, blank elsewhere."""
        keys = [key for _, key, _ in self.columns]
        cells = [" " * (self.columns[i][2] + GAP) for i in self._shown]
        for label, first, last in self.groups:
            members = [n for n, i in enumerate(self._shown) if keys.index(first) <= i <= keys.index(last)]
            if not members:
                continue
            start, end = members[0], members[-1]
            span = sum(len(cell) for cell in cells[start:end + 1]) - GAP
            cells[start:end + 1] = [" " + f"{label} ".ljust(span, "─")[:span] + " "] + [""] * (end - start)
        return Text("".join(cells), no_wrap=True, end="")

    def on_resize(self) -> None:
        self._header = None
        shown = self._fit(self.size.width - SCROLLBAR)
        if shown != self._shown:
            self._shown, self._width = shown, self._width_of(shown)
            if self._empty_note is None:
                self._strips = [None] * len(self._rows)
            self._resize()
            self.refresh()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._header = None

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        base = self.rich_style
        if y < self.header_lines:
            strip = self._header_strips()[y]
            header_style = self.get_component_rich_style("keyed-table--header")
            return strip.crop_extend(scroll_x, scroll_x + width, base + header_style)
        index = scroll_y + y - self.header_lines
        if index >= len(self._strips):
            return Strip.blank(width, base)
        strip = self._strips[index]
        if strip is None:
            strip = self._strips[index] = self._render_row(self._rows[index][1])
        style = base
        if index == self.cursor_row and self._rows:
            style = base + self.get_component_rich_style("keyed-table--cursor")
            strip = strip.extend_cell_length(max(self._width, width))
        return strip.apply_style(style).crop_extend(scroll_x, scroll_x + width, style)

    # ---- cursor ---------------------------------------------------------------------------------

    def watch_cursor_row(self, old: int, new: int) -> None:
        self._scroll_to_cursor()
        self.refresh()
        if old != new:
            self.post_message(self.RowHighlighted(self, self.cursor_key))

    def _scroll_to_cursor(self) -> None:
        visible = max(self.size.height - self.header_lines, 1)
        top = int(self.scroll_y)
        if self.cursor_row < top:
            self.scroll_to(y=self.cursor_row, animate=False)
        elif self.cursor_row >= top + visible:
            self.scroll_to(y=self.cursor_row - visible + 1, animate=False)

    def _move(self, row: int) -> None:
        if self._rows:
            self.cursor_row = min(max(row, 0), len(self._rows) - 1)

    def action_cursor(self, delta: int) -> None:
        self._move(self.cursor_row + delta)

    def action_page(self, direction: int) -> None:
        self._move(self.cursor_row + direction * max(self.size.height - self.header_lines - 1, 1))

    def action_sideways(self, direction: int) -> None:
        self.scroll_to(x=self.scroll_x + direction * SIDEWAYS_STEP, animate=False)

    def action_first(self) -> None:
        self._move(0)

    def action_last(self) -> None:
        self._move(len(self._rows) - 1)

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()

    def on_click(self, event: events.Click) -> None:
        if event.y >= self.header_lines:
            self._move(int(self.scroll_y) + event.y - self.header_lines)


def _safe_cell(cell: Cell) -> Text:
    """A copy of the cell that is safe to draw and to truncate in place."""
    if isinstance(cell, Text):
        return safe_text(cell).copy()
    return safe_text(str(cell))


def _row_differs(a: Row, b: Row) -> bool:
    return any(_cell_differs(x, y) for x, y in zip(a[1], b[1], strict=True))


def _cell_differs(a: Cell, b: Cell) -> bool:
    if isinstance(a, Text) and isinstance(b, Text):
        return a.plain != b.plain or a.spans != b.spans or a.style != b.style
    return a != b


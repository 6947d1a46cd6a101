"""A light keyed table for the panes: a header, rows kept by a stable key, a row cursor, scrolling.

Textual's DataTable re-renders every visible cell whenever one cell changes; a pane that refreshes
every second with twenty rows pays for that on every poll. This table renders a row to one Strip when
that row's cells change, and otherwise only crops cached strips (Textual's Line API), so a refresh costs
about one Rich render per changed row.
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

Cell = str | Text
Row = tuple[str, Sequence[Cell]]
Column = tuple[str, str, int]  # label, key, width in cells
GAP = 2  # cells between columns
SIDEWAYS_STEP = 10  # cells per left/right key


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

    def __init__(self, columns: Sequence[Column], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.columns = tuple(columns)
        self._rows: list[Row] = []
        self._strips: list[Strip] = []
        self._empty_note: str | None = None
        self._header: Strip | None = None
        self._width = sum(width for _, _, width in self.columns) + GAP * len(self.columns)

    # ---- data in --------------------------------------------------------------------------------

    @property
    def row_keys(self) -> list[str]:
        return [key for key, _ in self._rows]

    @property
    def cursor_key(self) -> str | None:
        if not self._rows:
            return None
        return self._rows[min(self.cursor_row, len(self._rows) - 1)][0]

    def get_cell(self, key: str, column: str) -> str:
        """The plain text of one cell (tests read the screen's content through this)."""
        index = next(i for i, (_, col, _) in enumerate(self.columns) if col == column)
        cells = next(cells for k, cells in self._rows if k == key)
        cell = cells[index]
        return cell.plain if isinstance(cell, Text) else str(cell)

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
                self._strips[i] = self._render_row(rows[i][1])
                if 1 <= i + 1 - int(self.scroll_y) < self.size.height:  # on screen, below the header
                    self.refresh_line(i + 1)  # ScrollView takes the virtual line and subtracts the scroll
            self._rows = rows
            return
        self._empty_note = None
        self._rows = rows
        self._strips = [self._render_row(cells) for _, cells in rows]
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
        self._strips = [self._render_row([Text(note, style="dim")], span=True)]
        self._resize()
        self.refresh()

    # ---- rendering ------------------------------------------------------------------------------

    def _resize(self) -> None:
        self.virtual_size = Size(self._width, len(self._strips) + 1)

    def _render_row(self, cells: Sequence[Cell], span: bool = False) -> Strip:
        line = Text(no_wrap=True, end="")
        if span:
            text = cells[0] if isinstance(cells[0], Text) else Text(str(cells[0]))
            line.append(" ")
            line.append_text(text)
        else:
            for (_, _, width), cell in zip(self.columns, cells, strict=True):
                text = cell.copy() if isinstance(cell, Text) else Text(str(cell))
                text.truncate(width, overflow="ellipsis", pad=True)
                line.append(" ")
                line.append_text(text)
                line.append(" ")
        segments = list(line.render(self.app.console))
        return Strip(segments, line.cell_len)

    def _header_strip(self) -> Strip:
        if self._header is None:
            style = self.get_component_rich_style("keyed-table--header")
            line = Text(no_wrap=True, end="")
            for label, _, width in self.columns:
                line.append(" " + label[:width].ljust(width) + " ")
            self._header = Strip(list(line.render(self.app.console)), line.cell_len).apply_style(style)
        return self._header

    def on_resize(self) -> None:
        self._header = None

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._header = None

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        base = self.rich_style
        if y == 0:
            strip = self._header_strip()
            header_style = self.get_component_rich_style("keyed-table--header")
            return strip.crop_extend(scroll_x, scroll_x + width, base + header_style)
        index = scroll_y + y - 1
        if index >= len(self._strips):
            return Strip.blank(width, base)
        strip = self._strips[index]
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
        visible = max(self.size.height - 1, 1)
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
        self._move(self.cursor_row + direction * max(self.size.height - 2, 1))

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
        if event.y >= 1:
            self._move(int(self.scroll_y) + event.y - 1)


def _row_differs(a: Row, b: Row) -> bool:
    return any(_cell_differs(x, y) for x, y in zip(a[1], b[1], strict=True))


def _cell_differs(a: Cell, b: Cell) -> bool:
    if isinstance(a, Text) and isinstance(b, Text):
        return a.plain != b.plain or a.spans != b.spans or a.style != b.style
    return a != b


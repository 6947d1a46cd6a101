"""The one sanitizer for text that came from a server (gateway, engine, later Kubernetes and Prometheus).

A terminal acts on some characters instead of drawing them: ESC starts sequences that move the cursor,
clear the screen (``ESC [2J``), set the window title (``ESC ]0;...BEL``) or write the clipboard
(``ESC ]52;c;...BEL``); CR and backspace overwrite what is already drawn; bidi overrides and isolates
reorder what follows them (Trojan Source); U+2028/U+2029 break lines. None of them may reach the screen
from a server string, so every such string passes through here before a pane draws it.

What is shown instead, so an operator sees that something odd was there rather than nothing:

- C0 controls (U+0000 to U+001F) as their Unicode control pictures, one cell each: ESC as ``␛``,
  BEL ``␇``, CR ``␍``, backspace ``␈``, line feed ``␊``, tab ``␉``; DEL (U+007F) as ``␡``.
- C1 controls (U+0080 to U+009F, e.g. the one-byte CSI U+009B), bidi controls (U+061C, U+200E, U+200F,
  U+202A to U+202E, U+2066 to U+2069), the line and paragraph separators U+2028/U+2029 and lone surrogates
  (which a UTF-8 terminal cannot even encode) as ``<U+XXXX>``, e.g. ``<U+202E>``.

In a ``Text`` the escapes are drawn in :data:`ESCAPE_STYLE`. The check is one precompiled regex search, so a
clean string (nearly all of them, on every one-second redraw) costs a fraction of a microsecond and comes
back as the very same object.
"""

from __future__ import annotations

import re

from rich.text import Text

ESCAPE_STYLE = "reverse"

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029\ud800-\udfff]")
_PICTURES = {**{chr(code): chr(0x2400 + code) for code in range(0x20)}, "\x7f": "\u2421"}


def escape(char: str) -> str:
    """The visible stand-in for one unsafe character: its control picture (``␛``) or ``<U+XXXX>``."""
    return _PICTURES.get(char) or f"<U+{ord(char):04X}>"


def _escape_match(match: re.Match[str]) -> str:
    return escape(match.group())


def clean(value: str) -> str:
    """``value`` with every unsafe character replaced by its visible escape; ``value`` itself when clean."""
    if _UNSAFE.search(value) is None:
        return value
    return _UNSAFE.sub(_escape_match, value)


def safe_text(value: str | Text, style: str = "") -> Text:
    """A ``Text`` safe to draw, escapes highlighted.

    A ``str`` becomes a ``Text`` in ``style``: build one from a raw server string this way rather than with
    ``Text(...)``, which silently drops BEL, CR and backspace, so the operator would not see they were there.
    A clean ``Text`` comes back as is; otherwise a copy with its spans kept.
    """
    if isinstance(value, str):
        if _UNSAFE.search(value) is None:
            return Text(value, style=style)
        return _escaped(value, value, Text(style=style))
    plain = value.plain
    if _UNSAFE.search(plain) is None:
        return value
    return _escaped(plain, value, value.blank_copy())


def _escaped(plain: str, source: str | Text, out: Text) -> Text:
    last = 0
    for match in _UNSAFE.finditer(plain):
        out.append(source[last:match.start()])
        out.append(escape(match.group()), style=ESCAPE_STYLE)
        last = match.end()
    out.append(source[last:])
    return out

"""``make screenshots`` draws every image the README shows, from the real app."""

from __future__ import annotations

import re
from pathlib import Path

from tests.console import make_screenshots

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_screenshot_the_readme_shows_is_drawn_by_make_screenshots(tmp_path: Path) -> None:
    shown = set(re.findall(r"\]\(screenshots/([\w.-]+)\.svg\)", README.read_text()))
    assert shown, "the README shows no screenshots"
    assert shown <= {shot.name for shot in make_screenshots.SHOTS}, "README images no Shot draws"
    assert make_screenshots.main([str(tmp_path)]) == 0
    for name in shown:
        svg = (tmp_path / f"{name}.svg").read_text()
        assert svg.startswith("<svg") and "Switchboard" in svg, name

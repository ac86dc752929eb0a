"""Runbook links: `docs/runbooks/<file>.md#<anchor>`, anchors made with GitHub's heading slugs.

Every failure xpufleet prints carries such a link; building them here (and parsing
the headings back with `anchors`) lets one test prove that each link lands on a real
heading of the runbook, as GitHub renders it.

tests/unit/test_runbook_links.py finds links as string literals and as `link()` calls
with literal arguments. A module that builds links at run time (from a registry, say)
exposes `runbook_links() -> list[str]` returning every link it can print; the test
checks each of them.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

RUNBOOK_DIR = "docs/runbooks"

_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_HTML_ANCHOR = re.compile(r"""<a\s+(?:name|id)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
_MD_IMAGE_OR_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_HTML_TAG = re.compile(r"<[^>]+>")


def _heading_text(markdown: str) -> str:
    """The plain text GitHub renders for a heading's inline markdown."""
    text = _MD_IMAGE_OR_LINK.sub(r"\1", markdown)
    return _HTML_TAG.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading (github-slugger): lowercase, punctuation dropped,
    each space a hyphen. `gpu.driver: no driver` -> `gpudriver-no-driver`."""
    kept = []
    for ch in _heading_text(heading).strip().lower():
        category = unicodedata.category(ch)
        if ch in (" ", "-", "_") or category[0] in ("L", "M", "N"):
            kept.append(ch)
        elif category == "Pc":
            kept.append(ch)
    return "".join(kept).replace(" ", "-")


def link(file: str, heading: str) -> str:
    """`docs/runbooks/<file>.md#<anchor>` for a heading of a runbook; `file` with or without .md."""
    name = file if file.endswith(".md") else f"{file}.md"
    return f"{RUNBOOK_DIR}/{name}#{slug(heading)}"


def headings(lines: Iterable[str]) -> list[str]:
    """ATX headings of a markdown text, outside fenced code blocks, in order."""
    found: list[str] = []
    fence: str | None = None
    for line in lines:
        opener = _FENCE.match(line)
        if opener:
            marker = opener.group(1)
            if fence is None:
                fence = marker[0] * 3
            elif marker.startswith(fence):
                fence = None
            continue
        if fence is not None:
            continue
        match = _ATX_HEADING.match(line.rstrip("\n"))
        if match:
            found.append(match.group(2) or "")
    return found


def anchors_of_text(text: str) -> set[str]:
    """Every anchor a markdown text offers: heading slugs (duplicates get -1, -2, ... as on
    GitHub) and explicit `<a id=...>` / `<a name=...>` anchors."""
    result: set[str] = set()
    seen: dict[str, int] = {}
    for heading in headings(text.splitlines()):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    result.update(_HTML_ANCHOR.findall(text))
    return result


def anchors(path: str | Path) -> set[str]:
    """Every anchor of a markdown file (see `anchors_of_text`)."""
    return anchors_of_text(Path(path).read_text(encoding="utf-8"))


def split(runbook_link: str) -> tuple[str, str]:
    """A runbook link -> (its file's path, its anchor); the anchor is "" when absent."""
    path, _, anchor = runbook_link.partition("#")
    return path, anchor

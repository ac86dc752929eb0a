"""Version strings as tuples, so '2025.0.1' >= '2025.0' and '2.7.0+xpu' >= '2.7' compare right."""

from __future__ import annotations

import re

_LEADING = re.compile(r"^\s*v?(\d+(?:\.\d+)*)")


def version_tuple(version: str | None) -> tuple[int, ...] | None:
    """Leading numeric release of a version: '2.8.0.dev20250516+xpu' -> (2, 8, 0)."""
    if not version:
        return None
    match = _LEADING.match(str(version))
    if not match:
        return None
    parts = [int(p) for p in match.group(1).split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def at_least(version: str | None, minimum: str) -> bool | None:
    """True/False when both parse; None when the found version is unreadable."""
    found, wanted = version_tuple(version), version_tuple(minimum)
    if found is None or wanted is None:
        return None
    return found >= wanted

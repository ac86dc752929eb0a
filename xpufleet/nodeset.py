"""Fold host names into ClusterShell-style node sets: node1,node2,node3 -> node[1-3]."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable

_TRAILING_NUMBER = re.compile(r"^(.*?)(\d+)$")


def _ranges(numbers: list[tuple[int, str]]) -> str:
    numbers.sort()
    parts: list[str] = []
    start = prev = numbers[0]
    for item in numbers[1:]:
        if item[0] == prev[0] + 1 and len(item[1]) == len(prev[1]):
            prev = item
            continue
        parts.append(start[1] if start == prev else f"{start[1]}-{prev[1]}")
        start = prev = item
    parts.append(start[1] if start == prev else f"{start[1]}-{prev[1]}")
    return ",".join(parts)


def fold(names: Iterable[str]) -> str:
    """A compact node set for display; order of prefixes follows first appearance."""
    by_prefix: dict[str, list[tuple[int, str]]] = defaultdict(list)
    plain: list[str] = []
    order: list[str] = []
    for name in names:
        match = _TRAILING_NUMBER.match(name)
        if not match:
            plain.append(name)
            continue
        prefix, digits = match.groups()
        if prefix not in by_prefix:
            order.append(prefix)
        by_prefix[prefix].append((int(digits), digits))
    out: list[str] = []
    for prefix in order:
        nums = by_prefix[prefix]
        if len(nums) == 1:
            out.append(f"{prefix}{nums[0][1]}")
        else:
            out.append(f"{prefix}[{_ranges(nums)}]")
    return ",".join(out + plain)

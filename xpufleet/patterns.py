"""Ansible host patterns for `--limit`: names, groups, globs, `~regex`, `a:b`, `a:&b`, `a:!b`.

The semantics follow ansible-core's InventoryManager (split on `,` or `:`, plain
patterns first, then `&` intersections, then `!` exclusions; a pattern names a group
or a host; `group[0]` / `group[1:3]` subscripts), with two deliberate differences:
the result is in inventory order (subscripts index a group's hosts in inventory order;
Ansible's own order for nested groups follows set iteration), and a pattern that
matches nothing is an error instead of a warning, so a typo in `--limit` never
silently runs on fewer nodes.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence

from .errors import InventoryError

#: Ansible's splitter when the pattern has no comma: bracketed parts stay whole.
_PART = re.compile(r"(?:[^\s:\[\]]|\[[^\]]*\])+")
_SUBSCRIPT = re.compile(r"^(.+)\[(?:(-?[0-9]+)|([0-9]+)[:-]([0-9]*))\]$")
_IPV6 = re.compile(r"^[0-9A-Fa-f:.]+$")
_GLOB_CHARS = (".", "?", "*", "[")


def split_patterns(limit: str) -> list[str]:
    """`a:b,c` -> [a, b, c]; brackets (`node[1:3]`) and IPv6 addresses stay whole."""
    if "," in limit:
        parts = limit.split(",")
    elif limit.count(":") >= 2 and _IPV6.match(limit.strip()):
        parts = [limit]
    else:
        parts = _PART.findall(limit)
    return [p.strip() for p in parts if p.strip()]


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        if pattern.startswith("~"):
            return re.compile(pattern[1:])
        return re.compile(fnmatch.translate(pattern))
    except re.error as exc:
        raise InventoryError(f"invalid host pattern {pattern!r}: {exc}", key="limit") from None


def _split_subscript(pattern: str) -> tuple[str, tuple[int, int | None] | None]:
    if pattern.startswith("~"):
        return pattern, None
    match = _SUBSCRIPT.match(pattern)
    if not match:
        return pattern, None
    expr, index, start, end = match.groups()
    if index is not None:
        return expr, (int(index), None)
    return expr, (int(start), int(end) if end else -1)


def _apply_subscript(
    pattern: str, hosts: list[str], subscript: tuple[int, int | None] | None
) -> list[str]:
    if not hosts or subscript is None:
        return hosts
    start, end = subscript
    try:
        if end is None:
            return [hosts[start]]
        last = len(hosts) - 1 if end == -1 else end
        if start > len(hosts) - 1:
            raise IndexError(start)
        return hosts[start : last + 1]
    except IndexError:
        raise InventoryError(
            f"no hosts match the subscripted pattern {pattern!r} "
            f"({len(hosts)} hosts before the subscript)",
            key="limit",
        ) from None


def _match_one(
    pattern: str,
    hosts: Sequence[str],
    group_members: Mapping[str, Sequence[str]],
) -> tuple[list[str], bool]:
    """Hosts one pattern names, and whether it named anything at all (group or host)."""
    expr, subscript = _split_subscript(pattern)
    if expr in ("all", "*"):
        return _apply_subscript(pattern, list(hosts), subscript), True
    regex = _compile(expr)
    matched: list[str] = []
    groups = [g for g in group_members if regex.match(g)]
    for group in groups:
        matched.extend(group_members[group])
    if not groups or expr.startswith("~") or any(ch in expr for ch in _GLOB_CHARS):
        matched.extend(h for h in hosts if regex.match(h))
    unique = list(dict.fromkeys(matched))
    return _apply_subscript(pattern, unique, subscript), bool(groups or unique)


def select_hosts(
    limit: str | None,
    hosts: Sequence[str],
    group_members: Mapping[str, Sequence[str]],
) -> list[str]:
    """Names of the hosts a `--limit` selects, in inventory order.

    `hosts` is every host in inventory order; `group_members` maps each group to
    all hosts in it or in its descendants. Raises InventoryError (exit 2) when a
    pattern names no group and no host, or when the selection is empty.
    """
    if limit is None or not limit.strip():
        return list(hosts)
    parts = split_patterns(limit)
    regular = [p for p in parts if p[0] not in "!&"]
    intersections = [p for p in parts if p[0] == "&"]
    exclusions = [p for p in parts if p[0] == "!"]
    if not regular:
        regular = ["all"]
    known = set(hosts)
    selected: dict[str, None] = {}
    for part in regular + intersections + exclusions:
        bare = part[1:] if part[0] in "!&" else part
        if not bare:
            raise InventoryError(f"empty pattern in --limit {limit!r}", key="limit")
        if part in known:
            matched = [part]
        else:
            matched, named = _match_one(bare, hosts, group_members)
            if not named:
                raise InventoryError(
                    f"--limit pattern {bare!r} matches no host and no group", key="limit"
                )
        if part[0] == "!":
            for name in matched:
                selected.pop(name, None)
        elif part[0] == "&":
            keep = set(matched)
            selected = {name: None for name in selected if name in keep}
        else:
            selected.update((name, None) for name in matched)
    if not selected:
        raise InventoryError(f"--limit {limit!r} selects no host", key="limit")
    order = {name: i for i, name in enumerate(hosts)}
    return sorted(selected, key=order.__getitem__)

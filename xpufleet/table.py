"""Human output of a TaskReport: one table, failures first, identical rows folded."""

from __future__ import annotations

from collections import defaultdict

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .nodeset import fold
from .results import SEVERITY, Result, TaskReport

STYLE = {
    "fail": "bold red",
    "failed": "bold red",
    "unreachable": "bold magenta",
    "warn": "yellow",
    "changed": "yellow",
    "pass": "green",
    "ok": "green",
    "skip": "dim",
}


#: statuses whose per-host details (offsets, addresses) fold into one row per check
QUIET = frozenset({"pass", "ok", "skip"})


def folded_rows(report: TaskReport) -> list[tuple[str, str, Result]]:
    """(node set, id, result) rows: hosts with the same id+status+message share a row.

    Passing rows of one check fold even when their messages differ only by host details
    (a clock offset, an address): the first host's message stands for them, marked so.
    Warnings and failures keep one row per distinct message. JSON keeps every message."""
    groups: dict[tuple[str, str, str, str | None], list[str]] = defaultdict(list)
    sample: dict[tuple[str, str, str, str | None], Result] = {}
    for name, host in report.hosts.items():
        for r in host.results:
            message = "" if r.status in QUIET else r.message
            key = (r.id, r.status, message, r.runbook)
            groups[key].append(name)
            sample.setdefault(key, r)
    rows: list[tuple[str, str, Result]] = []
    for key, names in groups.items():
        first = sample[key]
        messages = {
            r.message
            for name in names
            for r in report.hosts[name].results
            if (r.id, r.status) == key[:2]
        }
        if len(messages) > 1:
            first = Result(
                first.id, first.status, f"{names[0]}: {first.message} (others alike)", first.runbook
            )
        rows.append((fold(names), key[0], first))
    rows += [("cluster", r.id, r) for r in report.cluster]
    rows.sort(key=lambda row: (SEVERITY[row[2].status], row[1]))
    return rows


def unreachable_rows(report: TaskReport) -> list[tuple[str, str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for name, host in report.hosts.items():
        if not host.reachable or host.error:
            groups[host.error or "unreachable"].append(name)
    return [(fold(names), message) for message, names in groups.items()]


def render(report: TaskReport, console: Console, *, title: str | None = None) -> None:
    table = Table(title=title or report.task, show_lines=False, expand=False)
    table.add_column("status")
    table.add_column("hosts")
    table.add_column("check / step")
    table.add_column("message", overflow="fold")
    table.add_column("runbook", overflow="fold")
    for nodes, message in unreachable_rows(report):
        table.add_row(Text("unreachable", STYLE["unreachable"]), nodes, "connect", message, "")
    for nodes, check_id, r in folded_rows(report):
        table.add_row(
            Text(r.status, STYLE.get(r.status, "")), nodes, check_id, r.message, r.runbook or ""
        )
    console.print(table)
    console.print(summary_line(report))


def summary_line(report: TaskReport) -> Text:
    parts = Text()
    for status, count in report.summary().items():
        if parts:
            parts.append("  ")
        parts.append(f"{status}={count}", STYLE.get(status, ""))
    hosts = len(report.hosts)
    return Text(f"{report.task}: {hosts} host(s)  ") + parts

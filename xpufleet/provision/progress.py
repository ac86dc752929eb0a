"""Human output of provision: per-host transfer bars (stderr) and the final recap table."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from ..results import CHANGED, FAILED, OK, SKIP, TaskReport
from ..table import STYLE


class TransferBars:
    """One rich bar per (host, file) while bytes flow: size, rate, time left."""

    def __init__(self, console: Console, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.progress = Progress(
            TextColumn("[bold]{task.fields[host]}[/] {task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._started = False

    @contextlib.contextmanager
    def transfer(self, host: str, label: str, total: int) -> Iterator[Callable[[int], None]]:
        if not self.enabled:
            yield lambda n: None
            return
        if not self._started:
            self.progress.start()
            self._started = True
        task_id = self.progress.add_task(label, total=total, host=host)

        def advance(n: int) -> None:
            self.progress.update(task_id, advance=n)

        yield advance

    def stop(self) -> None:
        if self._started:
            self.progress.stop()
            self._started = False


def recap_rows(report: TaskReport) -> list[tuple[str, dict[str, int], str]]:
    """(host, counts per status, note) in inventory order (pure)."""
    rows = []
    for name, host in report.hosts.items():
        counts = {s: 0 for s in (OK, CHANGED, FAILED, SKIP)}
        for r in host.results:
            if r.status in counts:
                counts[r.status] += 1
        note = ""
        if not host.reachable:
            note = f"unreachable: {host.error}"
        else:
            failed = [r for r in host.results if r.status == FAILED]
            if failed:
                note = f"{failed[0].id}: {failed[0].message}"
        rows.append((name, counts, note))
    return rows


def render_recap(report: TaskReport, console: Console) -> None:
    table = Table(title=f"{report.task} recap", expand=False)
    table.add_column("host")
    for status in (OK, CHANGED, FAILED, SKIP):
        table.add_column(status, justify="right")
    table.add_column("first failure", overflow="fold")
    for name, counts, note in recap_rows(report):
        cells = [
            Text(str(counts[s]), STYLE[s] if counts[s] and s != SKIP else "dim")
            for s in (OK, CHANGED, FAILED, SKIP)
        ]
        host_style = "bold red" if counts[FAILED] or note else ""
        table.add_row(Text(name, host_style), *cells, note)
    console.print(table)
    sent = report.extra.get("bytes_sent")
    if sent is not None:
        console.print(f"wheel bytes sent: {sent / 1e6:.1f} MB")

"""Tasks that work on hosts in general: `run` (ad-hoc fan-out) and `trust` (host keys)."""

from __future__ import annotations

from typing import Any

from ..results import OK, HostReport, Result, TaskReport
from ..transport import Session
from ..trust import trust_hosts
from .common import TaskContext, node_task


@node_task(
    help={
        "command": "shell command to run on every selected host",
        "fail_fast": "stop starting new hosts after the first failure",
    }
)
def run(c: Any, command: str, ctx: TaskContext, fail_fast: bool = False) -> int:
    """Run one shell command on every host in parallel, like `clush -b` (output folded)."""
    from ..executor import fan_out

    def work(session: Session) -> str:
        return session.run(command).stdout.rstrip()

    outcomes = fan_out(ctx.hosts, work, ctx.options, forks=ctx.settings.forks, fail_fast=fail_fast)
    report = TaskReport("run")
    for name, outcome in outcomes.items():
        host_report = HostReport(reachable=outcome.reachable)
        if outcome.skipped:
            host_report.results.append(Result("run.command", "skip", "not run (--fail-fast)"))
        elif outcome.error is not None:
            host_report.add_error(outcome.error, "run.command")
        else:
            host_report.results.append(Result("run.command", OK, outcome.value or ""))
        report.hosts[name] = host_report
    return ctx.emit(report, title=f"run: {command}")


@node_task(help={"yes": "add keys without asking (after printing their fingerprints)"})
def trust(c: Any, ctx: TaskContext, yes: bool = False) -> int:
    """Show the hosts' SSH key fingerprints and add unknown ones to the known_hosts file."""
    report = trust_hosts(ctx.hosts, ctx.options, assume_yes=yes, forks=ctx.settings.forks)
    return ctx.emit(report, title="trust")


TASKS = [run, trust]

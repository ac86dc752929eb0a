"""Tasks that work on hosts in general: `run` (ad-hoc fan-out) and `trust` (host keys)."""

from __future__ import annotations

from typing import Any

from invoke import task

from ..results import OK, HostReport, Result, TaskReport
from ..transport import Session
from ..trust import trust_hosts
from .common import HOST_FLAGS_HELP, emit, exits, open_context


@task(
    help={
        "command": "shell command to run on every selected host",
        **HOST_FLAGS_HELP,
        "fail_fast": "stop starting new hosts after the first failure",
    }
)
@exits
def run(
    c: Any,
    command: str,
    hosts: str | None = None,
    limit: str | None = None,
    forks: int | None = None,
    json: bool = False,
    fail_fast: bool = False,
) -> int:
    """Run one shell command on every host in parallel, like `clush -b` (output folded)."""
    ctx = open_context(c, hosts=hosts, limit=limit, forks=forks, as_json=json)
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
    return emit(report, as_json=json, title=f"run: {command}")


@task(
    help={
        **HOST_FLAGS_HELP,
        "yes": "add keys without asking (after printing their fingerprints)",
    }
)
@exits
def trust(
    c: Any,
    hosts: str | None = None,
    limit: str | None = None,
    forks: int | None = None,
    json: bool = False,
    yes: bool = False,
) -> int:
    """Show the hosts' SSH key fingerprints and add unknown ones to the known_hosts file."""
    ctx = open_context(c, hosts=hosts, limit=limit, forks=forks, as_json=json)
    report = trust_hosts(ctx.hosts, ctx.options, assume_yes=yes, forks=ctx.settings.forks)
    return emit(report, as_json=json, title="trust")


TASKS = [run, trust]

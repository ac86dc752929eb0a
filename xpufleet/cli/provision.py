"""`invoke provision`: apply the roles (oneapi, python_env, wheels, sglang) to every node."""

from __future__ import annotations

from typing import Any

from rich.syntax import Syntax

from ..provision import ProvisionOptions, run_provision
from ..provision.progress import TransferBars, render_recap
from .common import TaskContext, console, node_task


@node_task(
    help={
        "check": "change nothing; list what would change",
        "diff": "show unified diffs of the templated files that change",
        "tags": "only steps of these roles/tags (comma-separated: oneapi,python_env,wheels,"
        "sglang, or finer tags such as templates, lock, check, torch)",
        "skip_tags": "skip steps with these roles/tags (comma-separated)",
        "fail_fast": "stop every host (between steps) after the first failure",
        "max_fail_percentage": "stop every host once more than this % of hosts failed",
    }
)
def provision(
    c: Any,
    ctx: TaskContext,
    check: bool = False,
    diff: bool = False,
    tags: str | None = None,
    skip_tags: str | None = None,
    fail_fast: bool = False,
    max_fail_percentage: float | None = None,
) -> int:
    """Provision nodes: oneAPI env, Python env, closed environment (lock, wheels), SGLang files.

    Idempotent: a second run reports only `ok` and sends no wheel bytes.
    """
    options = ProvisionOptions(
        check=check,
        diff=diff,
        fail_fast=fail_fast,
        max_fail_percentage=float(max_fail_percentage) if max_fail_percentage is not None else None,
    )
    bars = TransferBars(console)
    try:
        report = run_provision(
            ctx.hosts,
            ctx.options,
            ctx.settings.path(ctx.settings.wheels_dir),
            forks=ctx.settings.forks,
            options=options,
            tags=tags,
            skip_tags=skip_tags,
            transfers=bars.transfer,
        )
    finally:
        bars.stop()
    if diff and not ctx.as_json:
        for name, host in report.hosts.items():
            for result in host.results:
                if result.data.get("diff"):
                    console.print(f"[bold]{name}[/] {result.id}")
                    console.print(Syntax(result.data["diff"], "diff", theme="ansi_dark"))
    title = "provision --check (nothing changed)" if check else "provision"
    code = ctx.emit(report, title=title)
    if not ctx.as_json:
        render_recap(report, console)
    return code


TASKS = [provision]

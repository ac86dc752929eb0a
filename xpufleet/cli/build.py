"""`invoke build --host BUILDHOST`: build the pinned wheels there, fetch them into files/wheels/,
then lock the closed environment (every dependency, resolved by pip here, downloaded)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..build import plan_build, run_build, run_lock
from ..errors import InputError
from ..results import HostReport, TaskReport
from .common import HostFlags, node_task


@node_task(
    flags=("hosts", "forks", "json"),
    help={
        "host": "the build host (an inventory host name)",
        "recipe": "recipe(s) to build, comma-separated (default: the host's build_recipes; "
        "known: torch, triton, vllm, sglang, sglang-standin)",
        "source": "build this local Python source tree instead of a recipe (pip wheel)",
        "timeout": "seconds one recipe may take (default 14400)",
        "lock_only": "build nothing: only (re)lock files/wheels/ for BUILDHOST's nodes",
    },
)
def build(
    c: Any,
    host: str | None = None,
    recipe: str | None = None,
    source: str | None = None,
    timeout: float = 14400.0,
    lock_only: bool = False,
    *,
    flags: HostFlags,
) -> int:
    """Build wheels from pinned sources on BUILDHOST; bring them into files/wheels/ + manifest."""
    if not host:
        raise InputError("--host BUILDHOST is required (a host of the inventory)", key="host")
    ctx = flags.open(c, limit=host)
    if len(ctx.hosts) != 1:
        raise InputError(f"--host must name exactly one host, got {len(ctx.hosts)}", key="host")
    settings = ctx.settings
    wheels = settings.path(settings.wheels_dir)
    build_host = ctx.hosts[0]
    if lock_only:
        report = TaskReport("build")
        report.hosts[build_host.name] = HostReport()
    else:
        names = [r.strip() for r in (recipe or "").split(",") if r.strip()] or None
        plan = plan_build(
            build_host, names, local_source=Path(source).resolve() if source else None
        )
        logs = settings.path(settings.runs_dir) / time.strftime("build-%Y%m%d-%H%M%S")
        report = run_build(plan, ctx.options, wheels, logs, timeout=float(timeout))
    if report.exit_code() == 0:
        report.hosts[build_host.name].results.append(run_lock(build_host, wheels))
    return ctx.emit(report, title=f"build on {build_host.name}")


TASKS = [build]

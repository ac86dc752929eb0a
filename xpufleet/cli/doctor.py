"""`invoke doctor`: validate every node and the cluster, one round trip per host."""

from __future__ import annotations

from typing import Any

from ..doctor import run_doctor
from ..errors import InputError
from .common import TaskContext, console, node_task


def _tp(value: Any) -> int | None:
    if value in (None, "", 0, "0"):
        return None
    try:
        tp = int(value)
    except (TypeError, ValueError):
        raise InputError(f"--tp must be a whole number, got {value!r}", key="--tp") from None
    if tp < 1:
        raise InputError(f"--tp must be at least 1, got {tp}", key="--tp")
    return tp


@node_task(
    help={
        "strict": "warnings fail too (exit 1)",
        "tp": "check that the model fits this total tensor-parallel size "
        "(default: all devices of the selected hosts)",
    }
)
def doctor(c: Any, ctx: TaskContext, strict: bool = False, tp: str | None = None) -> int:
    """Check every node (GPU driver, runtimes, devices, oneAPI, Python stack, network,
    disk, memory, clock, leftovers) and the cluster (versions, wheels, rendezvous, plan)."""
    tp_value = _tp(tp)
    report = run_doctor(ctx.hosts, ctx.options, forks=ctx.settings.forks, tp=tp_value)
    code = ctx.emit(report, strict=strict, title="doctor")
    note = report.extra.get("doctor", {}).get("note")
    if note and not ctx.as_json:
        console.print(f"[dim]{note}[/]", highlight=False)
    return code


TASKS = [doctor]

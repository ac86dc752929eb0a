"""`invoke model.stage`: copy a model directory to every node through the relay."""

from __future__ import annotations

from typing import Any

from ..errors import InputError
from ..provision.progress import TransferBars
from ..stage import parse_source, stage_model, streams_for
from .common import TaskContext, console, node_task


@node_task(
    help={
        "source": "the model directory: a path on the control node, or HOST:PATH on a node",
        "fanout": "children per node in the relay (1 = a pipelined chain, default)",
        "streams": "relays at once, each with a share of the files (default: stage_streams, 1)",
        "verify": "re-hash every file on the nodes instead of trusting size+mtime records",
    }
)
def stage(
    c: Any,
    source: str = "",
    fanout: int = 1,
    streams: int | None = None,
    verify: bool = False,
    *,
    ctx: TaskContext,
) -> int:
    """Copy a model directory to model_path on every selected node: each file is sent
    once and relayed node to node; files a node already holds are not sent."""
    if int(fanout) < 1:
        raise InputError(f"--fanout must be at least 1, got {fanout}", key="--fanout")
    where = parse_source(source, ctx.inventory.select(None))
    count = streams_for(ctx.hosts, None if streams is None else int(streams))
    bars = TransferBars(console, enabled=not ctx.as_json)
    advances: dict[str, Any] = {}
    seen: dict[str, int] = {}
    stack: list[Any] = []

    def on_plan(needs: dict[str, int]) -> None:
        for name, total in needs.items():
            manager = bars.transfer(name, "model", total)
            advances[name] = manager.__enter__()
            stack.append(manager)
            seen[name] = 0

    def on_progress(name: str, written: int) -> None:
        if name in advances and written > seen[name]:
            advances[name](written - seen[name])
            seen[name] = written

    try:
        report = stage_model(
            ctx.hosts,
            ctx.options,
            where,
            forks=ctx.settings.forks,
            fanout=int(fanout),
            streams=count,
            verify=verify,
            on_progress=on_progress,
            on_plan=on_plan,
        )
    finally:
        bars.stop()
    code = ctx.emit(report, title="model.stage")
    info = report.extra.get("stage", {})
    if not ctx.as_json:
        console.print(
            f"source {info.get('source')}: {info.get('files')} files, "
            f"{info.get('bytes', 0) / 1e6:.1f} MB; control node sent "
            f"{info.get('control_bytes', 0) / 1e6:.1f} MB in {info.get('seconds')} s"
            + (f" ({count} streams)" if count > 1 else ""),
            highlight=False,
        )
    return code


TASKS = [stage]

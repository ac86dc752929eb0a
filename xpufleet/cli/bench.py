"""`invoke bench`: the seed's benchmarks and custom sweeps; `--compare A B` of two runs."""

from __future__ import annotations

from typing import Any

from ..bench.configs import int_list, name_list, optional_int, plan_bench, select_configs
from ..bench.runner import run_bench
from ..bench.runs import (
    compare,
    compare_table,
    new_run_id,
    read_run,
    resolve_run,
    results_table,
    version_changes,
)
from ..errors import InputError
from ..launch.plan import devices_per_node
from ..results import TaskReport
from .common import HostFlags, console, emit, node_task, relative, settings_from

LIST_HINT = "repeat the flag or give a comma list, e.g. --batch-size 1,8,32"


@node_task(
    iterable=["config", "batch_size", "input", "output", "tp", "compare"],
    help={
        "config": "named config: single-tile (bs 1, in 32, out 32) or tp8 (bs 1, in 1024, "
        "out 32, tp 8); repeatable; default: both",
        "batch_size": f"sweep: batch sizes ({LIST_HINT})",
        "input": "sweep: input lengths (repeatable or comma list)",
        "output": "sweep: output lengths (repeatable or comma list)",
        "tp": "sweep: tensor-parallel sizes; more than one node's tiles -> bench_serving "
        "against the server of `invoke launch`",
        "nnodes": "nodes a config's tp spans, as `invoke launch --nnodes` (default: as many "
        "as its tiles need); configs of tp >= N then run bench_serving against that server",
        "profile": "run each config under the torch profiler (traces stay on the node)",
        "engine": "the launched server's engine: sglang or vllm (every config then runs "
        "bench_serving --backend vllm); default: the inventory's `engine`",
        "compare": "compare two runs instead: --compare A --compare B (run ids or dirs)",
    },
)
def bench(
    c: Any,
    config: list[str] | None = None,
    batch_size: list[str] | None = None,
    input: list[str] | None = None,  # the flag is --input, as in the seed's guide
    output: list[str] | None = None,
    tp: list[str] | None = None,
    nnodes: str | None = None,
    profile: bool = False,
    engine: str | None = None,
    compare: list[str] | None = None,
    *,
    flags: HostFlags,
) -> int:
    """Benchmark SGLang (bench_one_batch on node 0, bench_serving for multi-node tp) or
    a vLLM launch (bench_serving); results in runs/<id>/bench.csv, .json and .png."""
    if compare:
        return _compare(c, name_list(compare), as_json=flags.json)
    ctx = flags.open(c)
    configs = select_configs(
        name_list(config),
        batch_sizes=int_list(batch_size, "batch-size"),
        input_lens=int_list(input, "input"),
        output_lens=int_list(output, "output"),
        tps=int_list(tp, "tp"),
        profile=profile,
    )
    node0 = ctx.hosts[0] if ctx.hosts else None
    plan = plan_bench(
        configs,
        tiles_per_node=devices_per_node(node0) if node0 else 0,
        nodes=[h.name for h in ctx.hosts],
        model_path=node0.var.model_path if node0 else "",
        nnodes=optional_int(nnodes, "nnodes"),
        engine=engine or (node0.var.engine if node0 else "sglang"),
    )
    runs_dir = ctx.settings.path(ctx.settings.runs_dir)
    run_id = new_run_id(runs_dir)
    outcome = run_bench(
        ctx.hosts,
        ctx.options,
        plan,
        run_id=run_id,
        run_dir=runs_dir / run_id,
        progress=lambda message: console.log(message, highlight=False),
    )
    title = "bench"
    if outcome.run.simulated:
        title += " — SIMULATED (lab stand-in, not Intel hardware)"
    if not ctx.as_json and outcome.paths:
        console.print(results_table(outcome.run))
        for kind, path in outcome.paths.items():
            console.print(f"{kind}: {relative(path)}", highlight=False)
    if not ctx.as_json and outcome.run.simulated:
        console.print(f"SIMULATED: {outcome.run.simulated}", highlight=False, soft_wrap=True)
    return ctx.emit(outcome.report, title=title)


def _compare(c: Any, refs: list[str], *, as_json: bool) -> int:
    if len(refs) != 2:
        raise InputError(
            f"--compare takes exactly two runs (A and B), got {len(refs)}", key="compare"
        )
    settings = settings_from(c)
    runs_dir = settings.path(settings.runs_dir)
    a, b = (read_run(resolve_run(ref, runs_dir)) for ref in refs)
    changes = version_changes(a, b)
    if as_json:
        report = TaskReport("bench")
        report.extra = {
            "compare": {
                "a": a.run_id,
                "b": b.run_id,
                "simulated": {"a": a.simulated, "b": b.simulated},
                "rows": [
                    {
                        "config": row.name,
                        "a_status": row.a.status if row.a else None,
                        "b_status": row.b.status if row.b else None,
                        "metrics": [
                            {
                                "metric": ch.metric,
                                "a": ch.a,
                                "b": ch.b,
                                "change_pct": ch.change_pct,
                            }
                            for ch in row.changes
                        ],
                    }
                    for row in compare(a, b)
                ],
                "changed": [{"what": w, "a": va, "b": vb} for w, va, vb in changes],
            }
        }
        return emit(report, as_json=True)
    console.print(compare_table(a, b))
    for label, run in (("A", a), ("B", b)):
        if run.simulated:
            console.print(
                f"{label} {run.run_id}: SIMULATED: {run.simulated}",
                highlight=False,
                soft_wrap=True,
            )
    if changes:
        console.print("what changed between A and B:")
        for what, va, vb in changes:
            console.print(f"  {what}: {va} -> {vb}", highlight=False)
    else:
        console.print("versions and wheel hashes: identical in A and B")
    return 0


TASKS = [bench]

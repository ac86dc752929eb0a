"""`invoke launch / status / stop / logs`: SGLang or vLLM across the cluster, and the run's
state."""

from __future__ import annotations

import json as jsonlib
import sys
import threading
from typing import Any

from rich.table import Table
from rich.text import Text

from ..errors import InputError, XpufleetError
from ..launch.chat import chat_once
from ..launch.control import run_logs, run_status, run_stop
from ..launch.plan import LaunchPlan, env_reason, explain_env, plan_launch
from ..launch.render import new_run_id
from ..launch.runner import launch as run_launch
from ..launch.slurm_step import sbatch_script
from ..results import PASS, Result, TaskReport
from ..slurm import node_order
from .common import TaskContext, console, node_task
from .linewriter import LineWriter

RUN_HELP = "run id to act on (default: the node's current run)"


def print_plan(plan: LaunchPlan, explain: bool = False) -> None:
    """The plan for humans (stderr): one row per node, then each node's command line."""
    head = "plan" if plan.engine == "sglang" else f"plan ({plan.engine})"
    pp = f" --pp {plan.pp}" if plan.pp > 1 else ""
    console.print(
        f"[bold]{head}[/]: --tp {plan.tp}{pp} over {plan.nnodes} node(s) x {plan.ranks_per_node} "
        f"rank(s); dist-init-addr {plan.dist_init_addr}; backend {plan.backend}; "
        f"device {plan.device}; model {plan.model_name} ({plan.model_path})",
        highlight=False,
    )
    console.print(f"fit: {plan.fit.message}", highlight=False)
    table = Table(show_lines=False)
    for column in ("node", "address", "node rank", "ranks", "ZE_AFFINITY_MASK", "rank:device"):
        table.add_column(column)
    for node in plan.nodes:
        table.add_row(
            node.host,
            node.address,
            str(node.node_rank),
            node.rank_span,
            node.device_mask,
            " ".join(f"{r.rank}:xpu{r.device}(#{r.physical_device})" for r in node.ranks),
        )
    console.print(table)
    from .. import shell

    for node in plan.nodes:
        console.print(f"[bold]{node.host}[/] environment:", highlight=False)
        for name, value in sorted(node.env.items()):
            reason = f"  # {env_reason(name)}" if explain else ""
            console.print(f"  {name}={shell.quote(value)}{reason}", highlight=False, soft_wrap=True)
        if explain:
            for rank in node.ranks:
                pairs = " ".join(f"{k}={v}" for k, v in sorted(rank.env.items()))
                console.print(
                    f"  preflight rank {rank.rank} (xpu:{rank.device}): {pairs}  "
                    f"# {env_reason('CCL_LOCAL_RANK')}",
                    highlight=False,
                    soft_wrap=True,
                )
        console.print(f"[bold]{node.host}[/] command:", highlight=False)
        console.print("  " + shell.join(node.argv), highlight=False, soft_wrap=True)
        if node.server_argv:
            console.print(
                f"[bold]{node.host}[/] server (after the preflight), with "
                + " ".join(f"{k}={shell.quote(v)}" for k, v in sorted(node.server_env.items()))
                + ":",
                highlight=False,
                soft_wrap=True,
            )
            console.print("  " + shell.join(node.server_argv), highlight=False, soft_wrap=True)
    for warning in plan.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    console.print(f"OpenAI base URL once started: {plan.base_url}", highlight=False)


def plan_report(plan: LaunchPlan, explain: bool = False) -> TaskReport:
    report = TaskReport("launch")
    report.cluster.append(
        Result(
            "launch.plan", PASS, f"--tp {plan.tp} over {plan.nnodes} node(s): {plan.fit.message}"
        )
    )
    report.extra["plan"] = plan.to_json()
    if explain:
        report.extra["explain"] = [
            {"where": where, "name": name, "value": value, "reason": reason}
            for where, name, value, reason in explain_env(plan)
        ]
    return report


@node_task(
    help={
        "tp": "total tensor-parallel size across all nodes (SGLang --tp-size, vLLM "
        "--tensor-parallel-size)",
        "engine": "sglang or vllm (default: the inventory's `engine`, else sglang)",
        "pp": "vLLM only: pipeline-parallel size (--pipeline-parallel-size), default 1",
        "nnodes": "number of nodes (default: as few as the devices need)",
        "model": "model path on the nodes (default: the inventory's model_path)",
        "plan": "print the plan (ranks, devices, environment, commands) and start nothing",
        "emit": "`sbatch`: print a self-contained Slurm batch script of the plan (submit it "
        "with sbatch, stop it with scancel) and start nothing",
        "explain": "with --plan: say for every environment variable who reads it",
    }
)
def launch(
    c: Any,
    tp: int,
    nnodes: int | None = None,
    engine: str | None = None,
    pp: int = 1,
    model: str | None = None,
    plan: bool = False,
    emit: str | None = None,
    explain: bool = False,
    *,
    ctx: TaskContext,
) -> int:
    """Plan, preflight and start SGLang (or vLLM on Ray) on the cluster; wait until node 0
    is ready.

    If any rank dies (before or after ready), every rank on every node is stopped and
    the output names the first rank that died.
    """
    the_plan = plan_launch(
        ctx.hosts, int(tp), int(nnodes) if nnodes else None, engine=engine, pp=int(pp),
        model_path=model,
        node_order=node_order,  # Slurm's node table: the order of SLURM_NODEID
    )  # fmt: skip
    if emit is not None:
        if emit != "sbatch":
            raise InputError(f"--emit knows only sbatch, not {emit!r}", key="emit")
        sys.stdout.write(sbatch_script(the_plan, {h.name: h for h in ctx.hosts}, new_run_id()))
        return 0
    if plan or explain:
        if not ctx.as_json:
            print_plan(the_plan, explain=explain)
            return 0
        return ctx.emit(plan_report(the_plan, explain=explain))
    status = console.status("launching", spinner="dots")
    if not ctx.as_json:
        status.start()
    try:
        report = run_launch(
            the_plan,
            {h.name: h for h in ctx.hosts},
            ctx.options,
            forks=ctx.settings.forks,
            runs_dir=ctx.settings.path(ctx.settings.runs_dir),
            progress=status.update,
        )
    finally:
        status.stop()
    code = ctx.emit(report, title=f"launch {report.extra.get('run_id', '')}")
    if not ctx.as_json:
        death = report.extra.get("first_death")
        if death:
            console.print(f"[bold red]first rank to die:[/] {death.get('what')} on "
                          f"{death.get('host')}; last log lines:", highlight=False)  # fmt: skip
            for line in death.get("tail") or []:
                console.print(f"  {death.get('host')}:{death.get('rank')} {line}", highlight=False)
        if report.extra.get("ready"):
            console.print(
                f"[bold green]ready[/]: OpenAI base URL {report.extra['base_url']}  "
                f"model {report.extra['model']}",
                highlight=False,
            )
    return code


@node_task(help={"run": RUN_HELP})
def status(c: Any, ctx: TaskContext, run: str | None = None) -> int:
    """Every node's launched ranks: running or not, pid, uptime, ready; the first death."""
    report = run_status(ctx.hosts, ctx.options, forks=ctx.settings.forks, run_id=run)
    code = ctx.emit(report, title="status")
    if not ctx.as_json and report.extra.get("base_url"):
        console.print(f"OpenAI base URL {report.extra['base_url']}", highlight=False)
    return code


@node_task(help={"run": RUN_HELP})
def stop(c: Any, ctx: TaskContext, run: str | None = None) -> int:
    """Stop every rank on every node (idempotent): no process left, ports free."""
    report = run_stop(
        ctx.hosts,
        ctx.options,
        forks=ctx.settings.forks,
        runs_dir=ctx.settings.path(ctx.settings.runs_dir),
        run_id=run,
    )
    return ctx.emit(report, title="stop")


@node_task(
    help={
        "run": RUN_HELP,
        "follow": "keep streaming new lines (Ctrl-C to end)",
        "lines": "only the last N lines of each node (default: all)",
    }
)
def logs(
    c: Any,
    ctx: TaskContext,
    run: str | None = None,
    follow: bool = False,
    lines: int = 0,
) -> int:
    """The run's engine logs from every node, each line prefixed host:rank."""
    collected: list[dict[str, str]] = []
    collect_lock = threading.Lock()
    # lines stream from the pool's workers through one daemon writer (linewriter.py:
    # why Ctrl-C must not wait on a reader that stopped reading)
    writer = LineWriter(sys.stdout.fileno() if ctx.as_json else sys.stderr.fileno())

    def emit_line(host: str, rank: str, line: str) -> None:
        if ctx.as_json and not follow:
            with collect_lock:
                collected.append({"host": host, "rank": rank, "line": line})
        elif ctx.as_json:
            writer.put(jsonlib.dumps({"host": host, "rank": rank, "line": line}) + "\n")
        else:
            with console.capture() as shown:
                console.print(
                    Text(f"{host}:{rank} ", style="cyan") + Text(line),
                    highlight=False,
                    soft_wrap=True,
                )
            writer.put(shown.get())

    with writer:  # Ctrl-C ends --follow: exit 130 like every interrupted task
        report = run_logs(
            ctx.hosts,
            ctx.options,
            forks=ctx.settings.forks,
            emit_line=emit_line,
            run_id=run,
            follow=follow,
            lines=int(lines),
            runs_dir=ctx.settings.path(ctx.settings.runs_dir),
        )
    if ctx.as_json:
        report.extra["lines"] = collected
        return ctx.emit(report)
    for name, host in report.hosts.items():
        problems = [r.message for r in host.results if r.status == "failed"]
        if host.error or problems:
            console.print(f"[red]{name}:[/] {host.error or '; '.join(problems)}", highlight=False)
    return report.exit_code()


@node_task(
    help={
        "message": "the user message to send",
        "max_tokens": "longest answer, in tokens (default 32)",
        "url": "OpenAI base URL (default: node 0 of the running launch, from `status`)",
    }
)
def chat(
    c: Any, message: str, max_tokens: int = 32, url: str | None = None, *, ctx: TaskContext
) -> int:
    """One chat request through the launched server's OpenAI-compatible API."""
    if url is None:
        found = run_status(ctx.hosts, ctx.options, forks=ctx.settings.forks)
        url = found.extra.get("base_url")
        if not url:
            raise XpufleetError("no running launch found (`invoke launch --tp N` first)")
    answer = chat_once(url, message, int(max_tokens)).to_json()
    report = TaskReport("chat")
    report.cluster.append(
        Result(
            "chat.reply",
            PASS,
            f"{answer['model']}: {answer['content']!r} "
            f"({answer['completion_tokens']} tokens in {answer['seconds']:.2f} s)",
            data=answer,
        )
    )
    if ctx.as_json:
        return ctx.emit(report)
    console.print(f"[bold]user[/]: {message}", highlight=False)
    console.print(f"[bold]{answer['model']}[/]: {answer['content']}", highlight=False)
    console.print(
        f"({answer['completion_tokens']} tokens in {answer['seconds']:.2f} s from {url})",
        highlight=False,
    )
    return 0


TASKS = [launch, status, stop, logs, chat]

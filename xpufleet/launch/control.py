"""`invoke status / stop / logs`: what a launched run is doing, ending it, its logs.

They read what each node's supervisor (remote/supervisor.py) keeps in the run directory
(`run.json`, `state.json`, the engine's log), so they work from any control node and
long after `invoke launch` returned. The engine of the run comes from its run.json.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import shell
from ..errors import ProtocolError
from ..executor import SessionPool
from ..host import Host
from ..results import FAIL, FAILED, OK, PASS, SKIP, WARN, HostReport, Result, TaskReport
from ..transport import Session, SSHOptions
from ..variables import venv_python
from . import judge, slurm_step
from .engines import get_engine
from .http import http_status
from .plan import url_host
from .remote.supervisor import tag_lines
from .render import RunPaths
from .runner import collect_run_logs, log_files, node_python


def _run_dir(host: Host, run_id: str | None) -> str:
    """A run's directory on a node (no run id: its `current` link)."""
    return RunPaths(host.var.state_dir, run_id or "current").dir


def _node_command(host: Host, action: str, run_id: str | None) -> str:
    directory = shell.quote(_run_dir(host, run_id))
    python = node_python(venv_python(host.var.venv))
    return (
        f"if [ -f {directory}/run.json ] && [ -f {directory}/supervisor.py ]; then "
        f"{python} {directory}/supervisor.py {action} {directory}; else echo '{{}}'; fi"
    )


def _http_address(host: Host, status: dict[str, Any]) -> tuple[str, int] | None:
    server = status.get("http") or {}
    if not server.get("http_port"):
        return None
    bind = str(server.get("http_host") or "")
    address = host.address if bind in ("", "0.0.0.0", "::") else bind
    return address, int(server["http_port"])


def node_ready(host: Host, status: dict[str, Any]) -> bool | None:
    where = _http_address(host, status)
    if where is None or status.get("state") != "running":
        return None
    path = get_engine(str(status.get("engine") or "sglang")).health_path(
        int(status.get("node_rank") or 0)
    )
    return http_status(f"http://{url_host(where[0])}:{where[1]}{path}", timeout=10) == 200


def run_status(
    hosts: list[Host], options: SSHOptions, *, forks: int, run_id: str | None = None
) -> TaskReport:
    """`invoke status`: every node's run, per rank: running or not, pid, uptime, ready."""
    report = TaskReport("status")
    with SessionPool(hosts, options, forks) as pool:
        outcomes = pool.map(lambda s: s.run_json(_node_command(s.host, "status", run_id)))
    statuses: dict[str, dict[str, Any]] = {}
    by_name = {h.name: h for h in hosts}
    found = {n: o.value for n, o in outcomes.items() if o.value}
    latest = max((str(s.get("run_id") or "") for s in found.values()), default="")
    for name, out in outcomes.items():
        host_report = report.hosts.setdefault(name, HostReport())
        if out.error is not None:
            host_report.add_error(out.error, "status.node", FAIL)
            continue
        status = out.value or {}
        if not status:
            host_report.results.append(Result("status.node", SKIP, "no launch on this node"))
            continue
        ended = status.get("state") in ("stopped", "failed") and not status.get("leftovers")
        if status.get("run_id") != latest and ended:
            # an older run that has ended: not part of the run asked about
            host_report.results.append(
                Result(
                    "status.node",
                    SKIP,
                    f"not in run {latest}; its last run {status.get('run_id')} "
                    f"{status.get('state')}",
                )
            )
            continue
        statuses[name] = status
        ready = node_ready(by_name[name], status)
        host_report.results.extend(_node_status_results(status, ready))
    death = judge.first_death({n: s for n, s in statuses.items() if s.get("run_id") == latest})
    if death:
        report.cluster.append(judge.death_result(death))
        report.extra["first_death"] = death
    for name, status in statuses.items():
        if status.get("node_rank") == 0 and status.get("state") == "running":
            where = _http_address(by_name[name], status)
            if where:
                report.extra["base_url"] = f"http://{url_host(where[0])}:{where[1]}/v1"
    report.extra["runs"] = {n: s.get("run_id") for n, s in statuses.items()}
    if slurm_step.over_slurm(hosts):
        report.cluster.append(slurm_step.steps_result(hosts, latest))
    return report


def _node_status_results(status: dict[str, Any], ready: bool | None) -> list[Result]:
    state = status.get("state")
    run = status.get("run_id")
    rank_count = len(status.get("ranks", []))
    node_rank = status.get("node_rank")
    results: list[Result] = []
    if state == "running":
        level = PASS if ready else WARN
        ready_text = "ready" if ready else "not ready yet"
        results.append(
            Result(
                "status.node",
                level,
                f"run {run}: running, node rank {node_rank}, {rank_count} rank(s), {ready_text}",
            )
        )
    elif state in ("starting", "stopping"):
        results.append(Result("status.node", WARN, f"run {run}: {state}"))
    elif state == "stopped":
        results.append(Result("status.node", SKIP, f"run {run}: stopped ({status.get('reason')})"))
    else:
        results.append(
            Result(
                "status.node",
                FAIL,
                f"run {run}: {state} ({status.get('reason')})",
                judge.RUNBOOK_RANK_CRASH,
            )
        )
    if state in ("running", "starting", "failed", "orphaned"):
        results.extend(judge.rank_results(status, ready))
        results.extend(judge.device_results(status))
        results.extend(judge.helper_results(status))
    leftovers = status.get("leftovers") or []
    if state in ("stopped", "failed", "orphaned") and leftovers:
        results.append(
            Result(
                "status.leftovers",
                FAIL,
                f"processes of this run still alive: {leftovers} (`invoke stop` ends them)",
                judge.RUNBOOK_LEFTOVERS,
            )
        )
    return results


def run_stop(
    hosts: list[Host],
    options: SSHOptions,
    *,
    forks: int,
    runs_dir: Path,
    run_id: str | None = None,
) -> TaskReport:
    """`invoke stop`: every rank of the run on every node, idempotently; logs collected."""
    report = TaskReport("stop")
    with SessionPool(hosts, options, forks) as pool:
        outcomes = pool.map(lambda s: s.run_json(_node_command(s.host, "stop", run_id), timeout=90))
        run_dirs: dict[str, str] = {}
        ids = set()
        engines: dict[str, str] = {}
        for name, out in outcomes.items():
            if out.value and out.value.get("run_id"):
                ids.add(out.value["run_id"])
                engines[out.value["run_id"]] = str(out.value.get("engine") or "sglang")
                host = next(h for h in hosts if h.name == name)
                run_dirs[name] = _run_dir(host, out.value["run_id"])
        for run in ids:
            collect_run_logs(
                pool,
                hosts,
                runs_dir / run,
                {n: d for n, d in run_dirs.items() if run in d},
                log_files(engines[run]),
            )
    for name, out in outcomes.items():
        host_report = report.hosts.setdefault(name, HostReport())
        if out.error is not None:
            host_report.add_error(out.error, "stop.node")
            continue
        status = out.value or {}
        if not status:
            host_report.results.append(Result("stop.node", OK, "nothing to stop (no launch)"))
            continue
        busy = judge.describe_ports(status.get("ports", []))
        leftovers = status.get("leftovers") or []
        alive = [r["rank"] for r in status.get("ranks", []) if r.get("alive")]
        if busy or leftovers or alive:
            problems = busy + [f"still alive: pids {leftovers}"] * bool(leftovers)
            problems += [f"ranks {judge.spans(alive)} still running"] * bool(alive)
            host_report.results.append(
                Result("stop.node", FAILED, "; ".join(problems), judge.RUNBOOK_LEFTOVERS)
            )
            continue
        what = (
            "stopped"
            if status.get("asked_supervisor") or status.get("killed_leftovers")
            else "was not running"
        )
        argv = (status.get("engine_stop") or {}).get("argv") or []
        after = (
            f"; {shell.join([Path(argv[0]).name, *argv[1:]])}: "
            f"exit {status['engine_stop'].get('code')}"
            if argv
            else ""
        )
        host_report.results.append(
            Result(
                "stop.node",
                OK,
                f"run {status.get('run_id')} {what}: {len(status.get('ranks', []))} rank(s) "
                f"down, no process left, ports free{after}",
            )
        )
    report.extra["runs"] = sorted(ids)
    if slurm_step.over_slurm(hosts):
        report.cluster.append(slurm_step.cancel_leftover_steps(hosts))
    return report


def _run_info(session: Session, run_id: str | None) -> dict[str, Any]:
    """A node's run (default: its current one): id, run.json, state.json; {} if none."""
    directory = shell.quote(_run_dir(session.host, run_id))
    text = session.run(
        f'[ -f {directory}/run.json ] || exit 0; basename "$(cd {directory} && pwd -P)"; '
        f"tr -d '\\n' < {directory}/run.json; echo; "
        f"tr -d '\\n' < {directory}/state.json 2>/dev/null; echo",
        timeout=60,
    ).stdout.splitlines()
    if len(text) < 2:
        return {}
    try:
        return {
            "run_id": text[0].strip(),
            "run": json.loads(text[1] or "{}"),
            "state": json.loads(text[2] if len(text) > 2 and text[2].strip() else "{}"),
        }
    except ValueError:
        raise ProtocolError(session.host.name, f"unreadable run files: {text[1][:120]!r}") from None


def run_logs(
    hosts: list[Host],
    options: SSHOptions,
    *,
    forks: int,
    emit_line: Callable[[str, str, str], None],
    run_id: str | None = None,
    follow: bool = False,
    lines: int = 0,
    runs_dir: Path | None = None,
) -> TaskReport:
    """`invoke logs`: the run's engine log from every node of it, each line tagged
    host:rank (--follow streams). Default run: the latest one on any selected node. A
    line naming a rank's process (Ray forwards every vLLM worker's output to the head) is
    tagged with that rank and the host it runs on."""
    report = TaskReport("logs")
    tail = f"-n {int(lines)}" if lines else "-n +1"

    with SessionPool(hosts, options, forks) as pool:
        infos = {n: o.value or {} for n, o in pool.map(lambda s: _run_info(s, run_id)).items()}
        if run_id is None:
            run_id = max((i.get("run_id") or "" for i in infos.values()), default="") or "current"
        run = run_id
        report.extra["run_id"] = run
        mine = [i for i in infos.values() if i.get("run_id") == run]
        run_doc = mine[0]["run"] if mine else {}
        engine = get_engine(str((run_doc.get("engine") or {}).get("name") or "sglang"))
        prefix = re.compile(engine.patterns.log_prefix)
        where: dict[str, tuple[str, str]] = {}
        for name, info in infos.items():
            if info.get("run_id") == run:
                for rank, entry in (info.get("state") or {}).get("ranks", {}).items():
                    where[f"pid={entry.get('pid')}"] = (name, str(rank))

        def emit(host: str, tag: str, line: str) -> None:
            if tag.startswith("pid="):
                host, tag = where.get(tag, (host, "main"))
            emit_line(host, tag, line)

        def log_of(host: Host) -> str:
            return shell.quote(f"{_run_dir(host, run)}/{engine.log_file}")

        if follow:
            outcomes = pool.map(
                lambda s: _follow(
                    s, f"tail {tail} -F {log_of(s.host)} 2>/dev/null", emit, pool.cancelled, prefix
                )
            )
        else:

            def work(session: Session) -> int:
                text = session.run(
                    f"tail {tail} {log_of(session.host)} 2>/dev/null || true", timeout=120
                ).stdout
                if runs_dir is not None and text:
                    target = runs_dir / run / session.host.name
                    target.mkdir(parents=True, exist_ok=True)
                    (target / engine.log_file).write_text(text)
                for tag, line in tag_lines(text.splitlines(), prefix):
                    emit(session.host.name, tag, line)
                return len(text.splitlines())

            outcomes = pool.map(work)
    for name, out in outcomes.items():
        host_report = report.hosts.setdefault(name, HostReport())
        if out.error is not None:
            host_report.add_error(out.error, "logs.node")
        elif out.value:
            host_report.results.append(Result("logs.node", OK, f"{out.value} line(s)"))
        else:
            host_report.results.append(Result("logs.node", SKIP, f"no log of run {run}"))
    return report


def _follow(
    session: Session,
    command: str,
    emit_line: Callable[[str, str, str], None],
    cancelled: threading.Event,
    prefix: re.Pattern[str],
) -> int:
    """Stream a remote `tail -F`, each line tagged host:rank, until Ctrl-C (`cancelled`)
    or the command ends: the session's `follow` (a channel over SSH, an srun step over
    Slurm)."""
    host = session.host.name
    tag = "main"
    count = 0

    def on_line(raw: bytes) -> None:
        nonlocal tag, count
        for line_tag, tagged in tag_lines([raw.decode(errors="replace")], prefix, start_tag=tag):
            tag = line_tag
            emit_line(host, line_tag, tagged)
            count += 1

    session.follow(command, on_line, cancelled)
    return count

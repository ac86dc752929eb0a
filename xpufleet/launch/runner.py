"""The edge of launching: SSH to every node of a plan, start, wait. Judgement is in
judge.py, rendering in render.py, the engine's own parts in engines/, status / stop /
logs of a run in control.py.

A launch, per node and in parallel, takes one round trip per step:
1. prepare: write the run directory (tar), drop a lock whose supervisor is gone, report
   who holds the ports the launch needs;
2. lock: provision's node lock (a second launch or a provision is refused), then the
   ports must be free;
3. start: `setsid nohup supervisor.py supervise` (outlives SSH); the supervisor takes the
   lock over and runs the launch script, which runs the preflight collective over exactly
   the planned ranks and, if it passed, becomes `python -m sglang.launch_server` in the
   same process (one torch import); a node whose preflight fails exits, and its
   supervisor stops every node;
4. wait: the preflight reports (`preflight.json`) and the supervisors' state over SSH,
   then node 0's /health_generate and the other nodes' /health over HTTP; a failed
   node ends the wait at once and the report names the ranks that never joined, or the
   first rank that died.
Fail-fast after that is the supervisors' job (remote/supervisor.py), so it also holds
after this command has returned.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .. import shell
from ..errors import ProtocolError
from ..executor import Outcome, SessionPool
from ..host import Host
from ..provision.lock import NodeLock, acquire_lock, release_lock
from ..results import FAIL, FAILED, OK, PASS, WARN, HostReport, Result, TaskReport
from ..transport import Session, SSHOptions
from . import judge, slurm_step
from .engines import get_engine
from .plan import LaunchPlan, NodePlan, url_host
from .render import RunPaths, bundle, env_file, new_run_id

Progress = Callable[[str], None]
POLL_S = 0.25
#: how long the control node waits for every node to finish a fail-fast teardown
SETTLE_S = 15.0
#: what a run leaves on a node besides the engine's log (`Engine.log_file`)
RUN_FILES = ("preflight.log", "supervisor.log", "state.json", "preflight.json")


def log_files(engine: str) -> tuple[str, ...]:
    """The files of a run worth copying to the control node."""
    return (get_engine(engine).log_file, *RUN_FILES)


LOG_TAIL_BYTES = 20_000_000


def node_python(venv_python: str) -> str:
    """The node's python for the stdlib-only node scripts (python3, else the venv's)."""
    return f"$(command -v python3 || echo {shell.quote(venv_python)})"


def _quiet(progress: Progress | None) -> Progress:
    return progress or (lambda message: None)


@dataclass
class NodeRun:
    """The control node's view of one node during a launch."""

    node: NodePlan
    paths: RunPaths
    lock: NodeLock | None = None
    preflight: dict[str, Any] | None = None
    state: dict[str, Any] = field(default_factory=dict)
    status: dict[str, Any] | None = None


class Launcher:
    """One `invoke launch`: the plan, the sessions, the report being built."""

    def __init__(
        self,
        plan: LaunchPlan,
        hosts: dict[str, Host],
        options: SSHOptions,
        *,
        forks: int,
        runs_dir: Path,
        run_id: str | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.plan = plan
        self.engine = get_engine(plan.engine)
        self.hosts = [hosts[n.host] for n in plan.nodes]
        self.pool = SessionPool(self.hosts, options, forks)
        self.run_id = run_id or new_run_id()
        self.local = runs_dir / self.run_id
        self.progress = _quiet(progress)
        self.report = TaskReport("launch")
        self.runs = {n.host: NodeRun(n, RunPaths(n.state_dir, self.run_id)) for n in plan.nodes}
        self.timings: dict[str, float] = {}
        self.prepared: dict[str, dict[str, Any]] = {}
        self.preflight_judged = False
        self.started = time.monotonic()
        self.report.extra.update(run_id=self.run_id, plan=plan.to_json())

    # -- helpers --------------------------------------------------------------
    def host_report(self, name: str) -> HostReport:
        return self.report.hosts.setdefault(name, HostReport())

    def add(self, name: str, result: Result) -> None:
        self.host_report(name).results.append(result)

    def on_all(
        self, work: Callable[[Session, NodeRun], Any], names: Iterable[str] | None = None
    ) -> dict[str, Outcome[Any]]:
        chosen = set(names) if names is not None else None
        targets = [h for h in self.hosts if chosen is None or h.name in chosen]
        return self.pool.map(lambda s: work(s, self.runs[s.host.name]), targets)

    def failed_hosts(self, outcomes: dict[str, Outcome[Any]], step: str) -> list[str]:
        """Record hosts whose step raised; returns their names."""
        bad = []
        for name, out in outcomes.items():
            if out.error is None:
                continue
            bad.append(name)
            self.host_report(name).add_error(out.error, step)
        return bad

    def lap(self, name: str, since: float) -> float:
        self.timings[name] = round(time.monotonic() - since, 3)
        return time.monotonic()

    def save_local(self, name: str, content: str) -> None:
        self.local.mkdir(parents=True, exist_ok=True)
        (self.local / name).write_text(content)

    # -- the launch ------------------------------------------------------------
    def run(self) -> TaskReport:
        plan = self.plan
        self.save_local("plan.json", json.dumps(plan.to_json(), indent=1))
        self.report.cluster.append(
            Result(
                "launch.plan",
                OK,
                f"--tp {plan.tp} over {plan.nnodes} node(s) x {plan.ranks_per_node} rank(s), "
                f"dist-init-addr {plan.dist_init_addr}, backend {plan.backend}, "
                f"device {plan.device}; {plan.fit.message}",
            )
        )
        for warning in plan.warnings:
            self.report.cluster.append(Result("launch.plan", WARN, warning))
        try:
            with self.pool:
                self.launch()
        except KeyboardInterrupt:
            self.progress("interrupted: stopping every rank")
            self.stop_everywhere()
            raise
        finally:
            self.report.extra["timings"] = self.timings
            self.save_local("launch.json", json.dumps(self.report.to_json(), indent=1))
        return self.report

    def launch(self) -> None:
        tic = time.monotonic()
        self.progress(f"preparing {len(self.hosts)} node(s) for run {self.run_id}")
        if not self.prepare():
            return
        tic = self.lap("prepare_s", tic)
        if not self.lock() or not self.check_ports():
            return
        tic = self.lap("lock_s", tic)
        if not self.start():
            return
        tic = self.lap("start_s", tic)
        self.wait_ready()
        self.lap("ready_s", tic)
        self.timings["total_s"] = round(time.monotonic() - self.started, 3)

    def prepare(self) -> bool:
        def work(session: Session, run: NodeRun) -> dict[str, Any]:
            node = run.node
            data = bundle(self.plan, node, self.run_id, env_file(session.host))
            directory = shell.quote(run.paths.dir)
            command = (
                f"set -e; mkdir -p {directory}; tar -xf - -C {directory}; "
                f"{node_python(node.python)} {directory}/supervisor.py prepare {directory}"
            )
            return session.run_json(command, stdin=data)

        outcomes = self.on_all(work)
        bad = self.failed_hosts(outcomes, "launch.prepare")
        self.prepared = {n: o.value for n, o in outcomes.items() if o.value is not None}
        if bad:
            self.abandon()
        return not bad

    def check_ports(self) -> bool:
        """After the lock (so a running launch is named as such): the ports must be free."""
        bad = []
        for name, doc in self.prepared.items():
            busy = judge.describe_ports(doc.get("ports", []))
            if busy:
                bad.append(name)
                self.add(
                    name,
                    Result(
                        "launch.prepare",
                        FAILED,
                        "; ".join(busy) + " (leftover ranks? `invoke status` / `invoke stop`)",
                        judge.RUNBOOK_PORT,
                    ),
                )
            else:
                note = " (removed a stale lock of a dead supervisor)" * bool(
                    doc.get("stale_lock_removed")
                )
                self.add(name, Result("launch.prepare", OK, f"run dir ready, ports free{note}"))
        if bad:
            self.abandon()
        return not bad

    def lock(self) -> bool:
        def work(session: Session, run: NodeRun) -> NodeLock:
            run.lock = acquire_lock(session, "launch", state_dir=run.node.state_dir)
            return run.lock

        outcomes = self.on_all(work)
        bad = self.failed_hosts(outcomes, "launch.lock")
        if bad:
            self.abandon()
        return not bad

    def abandon(self, keep_dirs: bool = False) -> None:
        """Before any supervisor started: give the locks back, drop the unused run dirs."""

        def work(session: Session, run: NodeRun) -> None:
            if run.lock is not None:
                release_lock(session, run.lock)
                run.lock = None
            if not keep_dirs:
                session.run(f"rm -rf {shell.quote(run.paths.dir)}", check=False)

        self.on_all(work, list(self.prepared))

    def start(self) -> bool:
        if slurm_step.over_slurm(self.hosts):  # one srun step is the run (slurm_step.py)
            return slurm_step.start(self)

        def work(session: Session, run: NodeRun) -> int:
            assert run.lock is not None
            directory = shell.quote(run.paths.dir)
            lock_doc = json.dumps({"path": run.lock.path, "token": run.lock.token})
            command = (
                f"set -e; cd {directory}; cat > lock.json; "
                f"ln -sfn {shell.quote(self.run_id)} {shell.quote(run.paths.current)}; "
                f"setsid nohup {node_python(run.node.python)} supervisor.py supervise "
                f"{directory} > supervisor.log 2>&1 < /dev/null & "
                "for i in $(seq 1 100); do [ -s supervisor.pid ] && break; sleep 0.05; done; "
                "cat supervisor.pid"
            )
            answer = session.run(command, stdin=lock_doc).stdout.strip()
            if not answer.isdigit():
                raise ProtocolError(
                    session.host.name, f"expected the supervisor's pid, got {answer[:120]!r}"
                )
            return int(answer)

        outcomes = self.on_all(work)
        bad = self.failed_hosts(outcomes, "launch.start")
        for name, out in outcomes.items():
            if out.value is not None:
                self.runs[name].lock = None  # the supervisor holds it now
                node = self.runs[name].node
                self.add(
                    name,
                    Result(
                        "launch.start",
                        OK,
                        f"supervisor pid {out.value} started ranks {node.rank_span} "
                        f"(run dir {self.runs[name].paths.dir})",
                    ),
                )
        if bad:
            self.stop_everywhere()
            self.report.cluster.append(
                Result("launch.start", FAIL, f"could not start on {judge.hosts_text(bad)}")
            )
        return not bad

    def read_states(self) -> None:
        """Every node's supervisor state and preflight report, one round trip per node."""

        def work(session: Session, run: NodeRun) -> dict[str, Any]:
            directory = shell.quote(run.paths.dir)
            text = session.run(
                f"cat {directory}/state.json 2>/dev/null || echo '{{}}'; echo; "
                f"cat {directory}/preflight.json 2>/dev/null || echo null",
                timeout=20,
            ).stdout
            state_text, _, preflight_text = text.strip().rpartition("\n")
            try:
                run.state = json.loads(state_text or "{}")
                run.preflight = json.loads(preflight_text or "null") or run.preflight
            except ValueError:
                pass  # caught mid-write: keep the previous one
            return run.state

        self.on_all(work)

    def judge_preflight(self) -> judge.PreflightVerdict:
        verdict = self.engine.judge_preflight(
            self.plan, {n: r.preflight for n, r in self.runs.items()}
        )
        for name, result in verdict.hosts.items():
            self.add(name, result)
        self.report.cluster.append(verdict.cluster)
        self.report.extra["preflight"] = {"ok": verdict.ok, "timings": verdict.timings}
        self.preflight_judged = True
        return verdict

    def wait_ready(self) -> None:
        plan = self.plan
        deadline = time.monotonic() + plan.ready_timeout
        started = time.monotonic()
        answers: dict[str, int] = {}
        while True:
            self.read_states()
            states = {n: r.state.get("state", "starting") for n, r in self.runs.items()}
            if any(s in ("failed", "stopping", "stopped") for s in states.values()):
                self.on_failure()
                return
            reporters = self.engine.preflight_reporters(plan)
            passed = sum(
                bool(self.runs[n].preflight and self.runs[n].preflight.get("ok"))  # type: ignore[union-attr]
                for n in reporters
            )
            if not self.preflight_judged and passed == len(reporters):
                self.judge_preflight()
                self.timings["preflight_s"] = round(time.monotonic() - started, 3)
            if not self.preflight_judged:
                self.progress(
                    f"preflight: {plan.backend} all_reduce over {plan.tp} ranks, "
                    f"{passed}/{len(reporters)} node(s) passed ({time.monotonic() - started:.0f} s)"
                )
                if time.monotonic() > deadline:
                    self.on_timeout(answers)
                    return
                time.sleep(POLL_S)
                continue
            for node in plan.nodes:
                if node.host not in answers or answers[node.host] != 200:
                    answers[node.host] = self.engine.ready(plan, node, timeout=5.0)
            up = sum(len(r.state.get("ranks", {})) for r in self.runs.values())
            if all(a == 200 for a in answers.values()) and all(
                s == "running" for s in states.values()
            ):
                self.on_ready(time.monotonic() - started)
                return
            elapsed = time.monotonic() - started
            self.progress(
                f"waiting for {plan.node0.host} "
                f"{self.engine.health_path(0)}{self.engine.ready_note}: {elapsed:.0f} s, "
                f"ranks up {up}/{plan.tp}, nodes answering "
                f"{sum(a == 200 for a in answers.values())}/{plan.nnodes}"
            )
            if time.monotonic() > deadline:
                self.on_timeout(answers)
                return
            time.sleep(POLL_S)

    def on_ready(self, seconds: float) -> None:
        plan = self.plan
        devices = {
            node.host: [
                replace(result, id=result.id.replace("status.", "launch."))
                for result in judge.device_results(self.runs[node.host].state)
            ]
            for node in plan.nodes
            if node.host in self.runs
        }
        for host, results in devices.items():
            for result in results:
                self.add(host, result)
        wrong = [h for h, results in devices.items() if any(r.status == FAIL for r in results)]
        if wrong:
            # ranks sharing or missing devices serve, but not as planned (oneCCL leaves
            # its IPC path, memory runs short): nothing is left running half-right
            self.stop_everywhere()
            self.collect_logs()
            self.report.cluster.append(
                Result(
                    "launch.devices",
                    FAIL,
                    f"ranks on devices the plan did not give them on {judge.hosts_text(wrong)}; "
                    "every rank was stopped",
                    judge.RUNBOOK_DEVICE,
                )
            )
            self.report.extra["ready"] = False
            return
        for node in plan.nodes:
            what = self.engine.health_path(node.node_rank)
            where = (
                f"{what} answers 200{self.engine.ready_note} on "
                f"{url_host(node.http_address)}:{node.http_port}"
                if node.serves_http
                else "no HTTP server on this node"
            )
            self.add(
                node.host,
                Result("launch.ready", PASS, f"ranks {node.rank_span} running; {where}"),
            )
        self.report.cluster.append(
            Result(
                "launch.endpoint",
                PASS,
                f"ready after {seconds:.1f} s: OpenAI base URL {plan.base_url} "
                f"model {plan.model_name} (run {self.run_id})",
            )
        )
        self.report.extra.update(base_url=plan.base_url, model=plan.model_name, ready=True)

    def on_failure(self) -> None:
        """A node's supervisor ended the run: wait for every node to finish stopping,
        then name the first rank that died."""
        deadline = time.monotonic() + SETTLE_S
        while time.monotonic() < deadline:
            states = [r.state.get("state") for r in self.runs.values()]
            if all(s in ("failed", "stopped") for s in states):
                break
            time.sleep(POLL_S)
            self.read_states()
        self.read_states()
        if not self.preflight_judged:
            verdict = self.judge_preflight()
            if not verdict.ok:
                # the engine never started anywhere: the preflight's verdict is the story
                self.report.extra["ready"] = False
                self.collect_logs()
                return
        statuses = self.node_statuses()
        death = judge.first_death(statuses)
        for name, status in statuses.items():
            if not status:
                continue
            for result in judge.rank_results(status, None):
                self.add(name, result)
            if status.get("leftovers"):
                self.add(
                    name,
                    Result(
                        "launch.stop",
                        FAILED,
                        f"processes left after the stop: {status['leftovers']}",
                        judge.RUNBOOK_LEFTOVERS,
                    ),
                )
        if death:
            self.report.cluster.append(judge.death_result(death))
            self.report.extra["first_death"] = death
        else:
            reasons = {n: r.state.get("reason") for n, r in self.runs.items() if r.state}
            reason = next((r for r in reasons.values() if r), "a node's supervisor ended the run")
            self.report.cluster.append(
                Result("launch.failed", FAIL, reason, judge.RUNBOOK_RANK_CRASH)
            )
        self.report.extra["ready"] = False
        self.collect_logs()

    def on_timeout(self, answers: dict[str, int]) -> None:
        plan = self.plan
        waiting = [f"{h} ({code or 'no answer'})" for h, code in answers.items() if code != 200]
        self.stop_everywhere()
        self.collect_logs()
        tail = ""
        log = self.local / plan.node0.host / self.engine.log_file
        if log.exists():
            lines = log.read_text(errors="replace").splitlines()
            tail = f"; last log line on {plan.node0.host}: {lines[-1].strip()}" if lines else ""
        self.report.cluster.append(
            Result(
                "launch.ready",
                FAIL,
                f"not ready after {plan.ready_timeout:g} s (ready_timeout): waiting for "
                f"{', '.join(waiting) or 'the supervisors'}; every rank was stopped{tail}",
                judge.RUNBOOK_WARMUP,
            )
        )
        self.report.extra["ready"] = False

    def node_statuses(self) -> dict[str, dict[str, Any] | None]:
        def work(session: Session, run: NodeRun) -> dict[str, Any]:
            directory = shell.quote(run.paths.dir)
            command = f"{node_python(run.node.python)} {directory}/supervisor.py status {directory}"
            run.status = session.run_json(command, timeout=60)
            return run.status

        outcomes = self.on_all(work)
        return {n: o.value for n, o in outcomes.items()}

    def stop_everywhere(self) -> None:
        def work(session: Session, run: NodeRun) -> dict[str, Any]:
            directory = shell.quote(run.paths.dir)
            command = (
                f"if [ -f {directory}/state.json ]; then {node_python(run.node.python)} "
                f"{directory}/supervisor.py stop {directory}; else echo '{{}}'; fi"
            )
            doc = session.run_json(command, timeout=60)
            if run.lock is not None:
                release_lock(session, run.lock)
                run.lock = None
            return doc

        self.on_all(work)

    def collect_logs(self, names: Iterable[str] | None = None) -> None:
        collect_run_logs(self.pool, self.hosts, self.local, {
            n: r.paths.dir for n, r in self.runs.items()
        }, names or log_files(self.plan.engine))  # fmt: skip


def collect_run_logs(
    pool: SessionPool,
    hosts: list[Host],
    local: Path,
    run_dirs: dict[str, str],
    names: Iterable[str],
) -> None:
    """Copy a run's logs from every node into runs/<id>/<host>/ on the control node."""
    wanted = list(names)

    def work(session: Session) -> None:
        remote = run_dirs.get(session.host.name)
        if not remote:
            return
        target = local / session.host.name
        target.mkdir(parents=True, exist_ok=True)
        for name in wanted:
            path = shell.quote(f"{remote}/{name}")
            result = session.run(
                f"if [ -f {path} ]; then tail -c {LOG_TAIL_BYTES} {path}; else exit 3; fi",
                check=False,
                timeout=120,
            )
            if result.exit_status == 0:
                (target / name).write_text(result.stdout)

    pool.map(work, [h for h in hosts if h.name in run_dirs])


def launch(
    plan: LaunchPlan,
    hosts: dict[str, Host],
    options: SSHOptions,
    *,
    forks: int,
    runs_dir: Path,
    progress: Progress | None = None,
    run_id: str | None = None,
) -> TaskReport:
    """Preflight, start and wait for `plan` (see the module's docstring)."""
    return Launcher(
        plan, hosts, options, forks=forks, runs_dir=runs_dir, run_id=run_id, progress=progress
    ).run()

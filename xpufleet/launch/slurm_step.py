"""Launch over Slurm: the engine runs as ONE srun step inside the allocation.

Over SSH each node's supervisor is started under `setsid nohup` so it outlives the SSH
session. Inside Slurm that would be a process escaping its job (with proctrack/cgroup
it would be killed as soon as the starting step ends), so instead the control node
starts one step, `srun -N nnodes --ntasks-per-node 1 -K`, whose task on each node IS
that node's supervisor (`setsid --wait`, so it still leads the session of its ranks).
The step lives as long as the run: srun's `-K` ends every task when one supervisor
exits with a failure (SIGTERM, then SIGKILL after the cluster's KillWait), on top of
the supervisors' own fail-fast; the first death is read from the supervisors' state
files, not from srun's exit status (143 when it killed the others). `stop` asks the
supervisors, as over SSH: every task then exits and the step ends; `scancel` of the
step is the backstop (step_name names it).

Each node's task takes its node rank from SLURM_NODEID: the plan put the nodes in
Slurm's node-table order (the order srun numbers them in, not the order of -w), so
node rank k's run directory is the one for the task with SLURM_NODEID k. The task also
checks that it runs on the node the plan put there (SLURMD_NODENAME): if Slurm numbered
the nodes otherwise (its node table changed since planning) it exits 97 naming both,
and -K ends the step, instead of running ranks under the wrong node rank.
"""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import tarfile
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .. import shell
from ..errors import PlanError
from ..host import Host
from ..results import FAIL, OK, Result
from ..slurm import COMMAND_VAR, STEP_ARGV, is_slurm, srun_argv, srun_env
from .plan import LaunchPlan
from .render import RunPaths, bundle, env_file

if TYPE_CHECKING:
    from ..transport import Session
    from .runner import Launcher, NodeRun

#: seconds a node's task gets to write its supervisor.pid once the step started
PID_WAIT_S = 30


def over_slurm(hosts: Sequence[Host]) -> bool:
    """Every host of the launch uses the Slurm connector (mixing is not supported)."""
    return bool(hosts) and all(is_slurm(h) for h in hosts)


def step_name(run_id: str) -> str:
    return f"xpufleet-launch-{run_id}"


def by_node_id(branches: Sequence[tuple[str, str]]) -> str:
    """A `case` over SLURM_NODEID: the k-th (node name, commands) runs on the task whose
    SLURM_NODEID is k, after checking it is that node (pure, unit-tested)."""
    cases = "".join(
        f'{k}) if [ "$SLURMD_NODENAME" != {shell.quote(name)} ]; then '
        f'echo "xpufleet: Slurm gave node $SLURMD_NODENAME SLURM_NODEID {k}, '
        f'the plan has {name} as node rank {k}" >&2; exit 97; fi; {commands};;\n'
        for k, (name, commands) in enumerate(branches)
    )
    return (
        f'case "$SLURM_NODEID" in\n{cases}'
        '*) echo "xpufleet: no node rank $SLURM_NODEID in the plan ($SLURMD_NODENAME)" >&2; '
        "exit 97;;\nesac\n"
    )


def engine_command(run_dirs: dict[str, str], pythons: dict[str, str]) -> str:
    """The step's task: node rank SLURM_NODEID's supervisor in the foreground (`run_dirs`
    in node-rank order)."""
    return by_node_id(
        [
            (
                name,
                f"cd {shell.quote(directory)} || exit 97; "
                f"exec setsid --wait {pythons[name]} supervisor.py supervise "
                f"{shell.quote(directory)} > supervisor.log 2>&1 < /dev/null",
            )
            for name, directory in run_dirs.items()
        ]
    )


def engine_argv(hosts: Sequence[Host], run_id: str) -> list[str]:
    """One task per node, killed together when one fails (-K); not --overlap: it is the
    allocation's main work (xpufleet's own short steps overlap it)."""
    return srun_argv(hosts, job_name=step_name(run_id), overlap=False, kill_on_bad_exit=True)


def node_python(venv_python: str) -> str:
    from .runner import node_python as of_runner  # runner imports this module

    return of_runner(venv_python)


def start(launcher: Launcher) -> bool:
    """Hand each node its lock, start the one step, wait for every supervisor's pid."""
    run_id = launcher.run_id

    def handover(session: Session, run: NodeRun) -> None:
        assert run.lock is not None
        directory = shell.quote(run.paths.dir)
        lock_doc = json.dumps({"path": run.lock.path, "token": run.lock.token})
        session.run(
            f"set -e; cd {directory}; cat > lock.json; "
            f"ln -sfn {shell.quote(run_id)} {shell.quote(run.paths.current)}",
            stdin=lock_doc,
        )

    bad = launcher.failed_hosts(launcher.on_all(handover), "launch.start")
    if bad:
        launcher.stop_everywhere()
        launcher.report.cluster.append(
            Result("launch.start", FAIL, f"could not start on {', '.join(bad)}")
        )
        return False
    runs = {h.name: launcher.runs[h.name] for h in launcher.hosts}
    command = engine_command(
        {n: r.paths.dir for n, r in runs.items()},
        {n: node_python(r.node.python) for n, r in runs.items()},
    )
    launcher.local.mkdir(parents=True, exist_ok=True)
    log_path = launcher.local / "srun.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            engine_argv(launcher.hosts, run_id),
            env=srun_env(launcher.hosts[0], command),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives `invoke launch`, as long as the allocation
        )
    launcher.report.extra["slurm"] = {
        "job": launcher.hosts[0].var.slurm_job,
        "step_name": step_name(run_id),
        "srun_pid": proc.pid,
        "srun_log": str(log_path),
    }

    def supervisor_pid(session: Session, run: NodeRun) -> int:
        directory = shell.quote(run.paths.dir)
        text = session.run(
            f"cd {directory}; for i in $(seq 1 {PID_WAIT_S * 20}); do "
            "[ -s supervisor.pid ] && break; sleep 0.05; done; cat supervisor.pid",
            timeout=PID_WAIT_S + 30,
        ).stdout
        return int(text.strip())

    outcomes = launcher.on_all(supervisor_pid)
    bad = launcher.failed_hosts(outcomes, "launch.start")
    for name, out in outcomes.items():
        if out.value is None:
            continue
        run = launcher.runs[name]
        run.lock = None  # the supervisor holds it now
        launcher.add(
            name,
            Result(
                "launch.start",
                OK,
                f"supervisor pid {out.value} started ranks {run.node.rank_span} as task of "
                f"srun step {step_name(run_id)} (run dir {run.paths.dir})",
            ),
        )
    if bad:
        launcher.stop_everywhere()
        tail = srun_tail(log_path.read_text(errors="replace"))
        launcher.report.cluster.append(
            Result("launch.start", FAIL, f"could not start on {', '.join(bad)}{tail}")
        )
    return not bad


def srun_tail(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return f"; srun: {lines[-1].strip()}" if lines else ""


def parse_steps(text: str) -> dict[str, str]:
    """`squeue -h -s -o '%i %j'` -> {step name: step id} (pure, unit-tested)."""
    steps = {}
    for line in text.splitlines():
        match = re.match(r"^\s*(\d+\.\d+)\s+(\S+)\s*$", line)
        if match:
            steps[match.group(2)] = match.group(1)
    return steps


def running_steps(hosts: Sequence[Host]) -> dict[str, Any]:
    """The launch steps Slurm still runs in the hosts' job: {step name: step id}."""
    job = hosts[0].var.slurm_job
    argv = ["squeue", "-h", "-s", "-o", "%i %j"] + ([f"--jobs={job}"] if job else [])
    proc = subprocess.run(
        argv, capture_output=True, text=True, env=srun_env(hosts[0], ""), timeout=60
    )
    steps = parse_steps(proc.stdout) if proc.returncode == 0 else {}
    return {name: step for name, step in steps.items() if name.startswith("xpufleet-launch-")}


def steps_result(hosts: Sequence[Host], run_id: str) -> Result:
    """`status` over Slurm: the launch step Slurm runs for the run, if any (info only)."""
    steps = running_steps(hosts)
    mine = steps.get(step_name(run_id)) if run_id else None
    if mine:
        return Result("status.slurm", OK, f"srun step {mine} ({step_name(run_id)}) running")
    others = ", ".join(f"{v} ({k})" for k, v in sorted(steps.items()))
    also = f"; also {others}" if others else ""
    return Result("status.slurm", OK, f"no srun step of run {run_id or '-'}{also}")


def cancel_leftover_steps(hosts: Sequence[Host]) -> Result:
    """After the supervisors stopped: a launch step Slurm still lists is cancelled."""
    steps = running_steps(hosts)
    if not steps:
        return Result("stop.slurm", OK, "no launch step left in the allocation")
    env = srun_env(hosts[0], "")
    subprocess.run(["scancel", *steps.values()], env=env, capture_output=True, timeout=60)
    return Result("stop.slurm", OK, f"cancelled srun step(s) {', '.join(sorted(steps.values()))}")


# -- launch --emit sbatch ------------------------------------------------------------------
def sbatch_script(plan: LaunchPlan, hosts: dict[str, Host], run_id: str) -> str:
    """A self-contained batch script of `plan`: every node's run directory travels inside
    it (tar.gz, base64), goes to the nodes with `sbcast` (Slurm's tree broadcast) and the
    same one-step engine (`srun -K`, a supervisor per node) starts. Submit with `sbatch`;
    `scancel` stops it. No control node is involved once submitted (no node lock: a
    provision during the job is not refused)."""
    state_dirs = {n.state_dir for n in plan.nodes}
    if len(state_dirs) != 1:
        raise PlanError(
            "--emit sbatch needs one state_dir on every node (sbcast writes one path)",
            key="state_dir",
        )
    runs = RunPaths(state_dirs.pop(), run_id)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        for node in plan.nodes:
            data = bundle(plan, node, run_id, env_file(hosts[node.host]))
            with tarfile.open(fileobj=io.BytesIO(data)) as one:
                for member in one.getmembers():
                    content = one.extractfile(member)
                    member.name = f"{node.host}/{member.name}"
                    tar.addfile(member, content)
    encoded = base64.encodebytes(archive.getvalue()).decode()
    shipped = f"{runs.runs}/.{run_id}.tar.gz"
    command = by_node_id(
        [
            (
                node.host,
                f"d={shell.quote(runs.dir)}; "
                f'mkdir -p "$d" && tar -xzf {shell.quote(shipped)} -C "$d" --strip-components=1 '
                f'{shell.quote(node.host + "/")} && rm -f {shell.quote(shipped)} && cd "$d" && '
                f"ln -sfn {shell.quote(run_id)} {shell.quote(runs.current)} && "
                f'exec setsid --wait {node_python(node.python)} supervisor.py supervise "$d" '
                "> supervisor.log 2>&1 < /dev/null",
            )
            for node in plan.nodes  # in node-rank order: Slurm's, as planned
        ]
    )
    names = ",".join(n.host for n in plan.nodes)
    return (
        "#!/bin/bash\n"
        f"#SBATCH --job-name={step_name(run_id)}\n"
        f"#SBATCH --nodes={plan.nnodes}\n"
        "#SBATCH --ntasks-per-node=1\n"
        f"#SBATCH --nodelist={names}\n"
        f"# xpufleet launch --tp {plan.tp} --nnodes {plan.nnodes} (run {run_id}): "
        f"{plan.model_name}, dist-init-addr {plan.dist_init_addr}\n"
        f"# OpenAI base URL once ready: {plan.base_url}\n"
        "# Written by `invoke launch --emit sbatch`; submit with sbatch, stop with scancel.\n"
        "set -eu\n"
        "bundle=$(mktemp)\ntrap 'rm -f \"$bundle\"' EXIT\n"
        f"base64 -d > \"$bundle\" <<'__XPUFLEET_BUNDLE__'\n{encoded}__XPUFLEET_BUNDLE__\n"
        f"srun --ntasks-per-node=1 mkdir -p {shell.quote(runs.runs)}\n"
        f'sbcast --force "$bundle" {shell.quote(shipped)}\n'
        f"{COMMAND_VAR}={shell.quote(command)}\n"
        f"export {COMMAND_VAR}\n"
        f"srun --kill-on-bad-exit=1 --ntasks-per-node=1 --export={COMMAND_VAR} "
        f"--job-name={step_name(run_id)} {shell.join(STEP_ARGV)}\n"
    )

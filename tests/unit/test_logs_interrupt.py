"""`logs --follow` ends on ONE Ctrl-C even when its reader stopped reading.

The flake of issue #11 item 7: a lab test read the first line of `logs --follow --json`,
sent SIGINT and then read nothing more; the nodes' log lines kept coming, the pipe
filled, a pool worker blocked in write() and the interpreter's exit (which joins pool
workers) waited for it forever. Here the real `logs` task and the real SessionPool.map
run in a subprocess; only the SSH session is replaced by one whose "remote tail" emits
lines until the pool is cancelled, far more than a pipe holds.
"""

from __future__ import annotations

import array
import fcntl
import json
import select
import signal
import subprocess
import sys
import termios
import textwrap
from pathlib import Path
from typing import IO

#: fcntl's F_GETPIPE_SZ (Linux): a pipe's capacity
F_GETPIPE_SZ = 1032

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import sys
    from invoke import Context
    from invoke.exceptions import Exit

    import xpufleet.cli.launch as cli
    import xpufleet.executor as executor
    from xpufleet.results import TaskReport


    class EndlessTail:
        def __init__(self, host, options, cancelled=None):
            self.host = host

        def open(self):
            return self

        def close(self):
            pass


    def run_logs(hosts, options, *, forks, emit_line, **_):
        with executor.SessionPool(hosts, options, forks) as pool:

            def work(session):
                n = 0
                while not pool.cancelled.is_set():
                    emit_line(session.host.name, "TP0", "x" * 300 + f" {n}")
                    n += 1
                return n

            pool.map(work)
        return TaskReport("logs")


    executor.connect = EndlessTail
    cli.run_logs = run_logs
    try:
        cli.logs(Context(), hosts=sys.argv[1], follow=True, json=sys.argv[2] == "json")
    except Exit as done:
        sys.exit(done.code)
    """
)


def wait_until_full(stream: IO[str]) -> None:
    """Until the pipe is full and stays so: the tool's writers are blocked. (Small writes
    leave part of each pipe page unused, so "full" is a little short of the capacity.)"""
    capacity = fcntl.fcntl(stream.fileno(), F_GETPIPE_SZ)
    queued = array.array("i", [0])
    seen: list[int] = []
    while len(seen) < 3 or len(set(seen[-3:])) > 1 or seen[-1] < capacity * 7 // 8:
        select.select([], [], [], 0.05)
        fcntl.ioctl(stream.fileno(), termios.FIONREAD, queued)
        seen.append(queued[0])


def interrupt_after_first_line(tmp_path: Path, mode: str) -> subprocess.CompletedProcess[str]:
    inventory = tmp_path / "hosts.yaml"
    inventory.write_text(
        "all:\n  hosts:\n    node1: {ansible_host: 10.0.0.1}\n    node2: {ansible_host: 10.0.0.2}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(inventory), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "XPUFLEET_SSH_CONFIG": "none", "HOME": str(tmp_path)},
    )
    try:
        stream = proc.stdout if mode == "json" else proc.stderr
        assert stream is not None
        first = stream.readline()
        assert "node" in first, first + (proc.stderr.read() if proc.stderr else "")
        if mode == "json":
            assert json.loads(first)["rank"] == "TP0"
            wait_until_full(stream)
        proc.send_signal(signal.SIGINT)
        try:  # a hang guard, not a timing
            if mode == "json":  # the reader stops reading: the tool writes into a full pipe
                status = proc.wait(timeout=60)
            else:  # lines and the "interrupted" message share stderr: read it, as a terminal
                proc.communicate(timeout=60)
                status = proc.returncode
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("logs --follow outlived one Ctrl-C with an unread pipe") from None
        return subprocess.CompletedProcess(proc.args, status)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_json_follow_ends_on_one_ctrl_c_with_an_unread_pipe(tmp_path: Path) -> None:
    assert interrupt_after_first_line(tmp_path, "json").returncode == 130


def test_human_follow_prints_host_rank_lines_and_ends_on_one_ctrl_c(tmp_path: Path) -> None:
    assert interrupt_after_first_line(tmp_path, "human").returncode == 130

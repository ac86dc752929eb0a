"""Process plumbing shared by the stand-in's entry points: logs in SGLang's format,
process names, parent-death signals, memory figures."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import socket
import sys

_PR_SET_PDEATHSIG = 1
#: the lab's faults for this stand-in (xpufleet/lab/faults.py, written by lab/layout.py)
LAB_ENGINE_FAULTS = "/opt/intel/.lab/engine_faults.json"

logger = logging.getLogger("sglang")


def configure_logger(log_level: str = "info", prefix: str = "") -> None:
    """`[YYYY-MM-DD HH:MM:SS TPn] message`, as SGLang 0.4.x prints (fixtures 14c, 14e)."""
    # stderr, like SGLang's logging.basicConfig: stdout stays for rank 0's results
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(f"[%(asctime)s{prefix}] %(message)s", datefmt="%Y-%m-%d %H:%M:%S")
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, log_level.upper(), logging.INFO))


def set_process_name(name: str) -> None:
    """`setproctitle.setproctitle(name)` as the fork does (scheduler.py:
    `setproctitle.setproctitle("sglang::scheduler")` with NO rank index;
    detokenizer_manager.py: `"sglang::detokenizer"`). The lab's base environment carries
    the real setproctitle package; without it only comm (15 characters) changes."""
    try:
        import setproctitle  # type: ignore[import-not-found]

        setproctitle.setproctitle(name)
    except ImportError:
        try:
            with open("/proc/self/comm", "w") as comm:
                comm.write(name[:15])
        except OSError:
            pass


def kill_itself_when_parent_died() -> None:
    """A rank must not outlive its server process (SGLang does the same with prctl)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


def available_memory_gb() -> float:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / (1 << 20)
    except OSError:
        pass
    return 0.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def kill_children(children: list[int], sig: int = signal.SIGKILL) -> None:
    for pid in children:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def lab_fault(name: str) -> object:
    """A lab fault's parameter when the lab turned it on for this node (None otherwise):
    departures from the fork's behaviour that the lab injects on purpose, so a launcher
    built on the fork's happy path is caught. Never part of SGLang."""
    try:
        with open(LAB_ENGINE_FAULTS) as fh:
            return json.load(fh).get(name)
    except (OSError, ValueError, AttributeError):
        return None

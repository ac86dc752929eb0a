"""The lab's processes: finding a node's processes by namespace, starting nodes, killing.

The lab's nodes share one process table, so a node's processes are told apart by their
mount namespace: every process whose /opt/intel is this node's copy (same device and
inode as nodes/node<i>/fs/opt_intel), or the node's holder (found by its name). So
`down` works after a crash and without a state file.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from .profile import LabError

NODEINIT = Path(__file__).resolve().parent / "nodeinit.py"
CLEAN_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
START_TIMEOUT = 30.0
KILL_TIMEOUT = 10.0


def ns_inode(pid: int | str, kind: str = "mnt") -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except OSError:
        return None


def namespaces() -> dict[int, list[int]]:
    """Every mount namespace other than ours -> the pids in it."""
    own = ns_inode("self")
    groups: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        inode = ns_inode(entry.name)
        if inode is None or inode == own:
            continue
        groups.setdefault(inode, []).append(int(entry.name))
    return groups


def pid_alive(pid: int | None) -> bool:
    """Whether a process runs (a zombie or dead entry does not count)."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def port_open(address: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def kill_all(pids: list[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def wait_for(done: Any, timeout: float) -> bool:
    """Poll `done()` every 20 ms until it is true or `timeout` seconds passed."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def nsenter(holder: int, *argv: str) -> None:
    """Run argv in the mount namespace of a node (its holder's)."""
    proc = subprocess.run(
        ["nsenter", f"--target={holder}", "--mount", "--", *argv],
        capture_output=True,
        text=True,
        env=CLEAN_ENV,
        cwd="/",
    )
    if proc.returncode != 0:
        raise LabError(f"{' '.join(argv)} in the node failed: {proc.stderr.strip()}")


def node_identities(lab_dir: Path) -> dict[tuple[int, int], int]:
    """(st_dev, st_ino) of each node's /opt/intel copy -> node index."""
    found: dict[tuple[int, int], int] = {}
    nodes = lab_dir / "nodes"
    if not nodes.is_dir():
        return found
    for entry in nodes.iterdir():
        match = re.match(r"^node(\d+)$", entry.name)
        if not match:
            continue
        with contextlib.suppress(OSError):
            st = (entry / "fs" / "opt_intel").stat()
            found[(st.st_dev, st.st_ino)] = int(match.group(1))
    return found


def holder_name(lab_dir: Path, index: int) -> str:
    """The name a node's holder process (`sleep infinity`, see nodeinit.py) runs under."""
    return f"xpufleet-lab:{lab_dir}:node{index}"


def holders(lab_dir: Path) -> dict[int, int]:
    """pid -> node index of this lab's holder processes (found by their name)."""
    prefix = holder_name(lab_dir, 0)[:-1].encode()
    found: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as fh:
                argv0 = fh.read().split(b"\0", 1)[0]
        except OSError:
            continue
        if argv0.startswith(prefix) and argv0[len(prefix) :].isdigit():
            found[int(entry.name)] = int(argv0[len(prefix) :])
    return found


def node_processes(lab_dir: Path) -> dict[int, list[int]]:
    """node index -> pids of every process in that node's namespaces."""
    identities = node_identities(lab_dir)
    holder_pids = holders(lab_dir)
    result: dict[int, list[int]] = {}
    for _inode, pids in namespaces().items():
        # the holder's name first: the node's sshd (started before its holder) has the
        # lower pid, and its /opt/intel matches no identity once the lab dir is gone
        index = next((holder_pids[pid] for pid in pids if pid in holder_pids), None)
        for pid in pids if index is None else ():
            with contextlib.suppress(OSError):
                st = os.stat(f"/proc/{pid}/root/opt/intel")
                index = identities.get((st.st_dev, st.st_ino))
                break
        if index is not None:
            result.setdefault(index, []).extend(pids)
    return result


def kill_nodes(lab_dir: Path, indexes: set[int] | None = None, *, keep_holder: bool = False) -> int:
    """SIGKILL every process of the given nodes (all if None) until none is left."""
    killed: set[int] = set()
    deadline = time.monotonic() + KILL_TIMEOUT
    spared = holders(lab_dir) if keep_holder else {}
    while True:
        victims = [
            pid
            for index, pids in node_processes(lab_dir).items()
            if indexes is None or index in indexes
            for pid in pids
            if pid not in spared and pid_alive(pid)
        ]
        if not victims:
            return len(killed)
        if time.monotonic() > deadline:
            raise LabError(f"processes of the lab would not die: {sorted(victims)}")
        kill_all(victims)
        killed.update(victims)
        time.sleep(0.02)


def start_nodes(node_dirs: dict[int, Path], spec_files: dict[int, Path]) -> dict[int, Any]:
    """Run nodeinit.py for each node in parallel; index -> its answer ({ok, holder, mnt,
    uts}) or the error text of a node that did not start."""
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else "python3"
    procs: dict[int, subprocess.Popen[bytes]] = {}
    for i, spec_file in spec_files.items():
        with (node_dirs[i] / "node.log").open("a") as log:
            procs[i] = subprocess.Popen(
                [python, "-I", "-S", str(NODEINIT), str(spec_file)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                env=CLEAN_ENV,
                cwd="/",
                start_new_session=True,
            )
    answers: dict[int, Any] = {}
    for i, proc in procs.items():
        try:
            out, _ = proc.communicate(timeout=START_TIMEOUT)
            answers[i] = json.loads(out.decode().strip().splitlines()[-1])
        except (subprocess.TimeoutExpired, ValueError, IndexError):
            proc.kill()
            proc.wait()
            log_tail = (node_dirs[i] / "node.log").read_text(errors="replace")[-400:]
            answers[i] = f"did not start: {log_tail.strip()}"
            continue
        if not answers[i].get("ok"):
            answers[i] = str(answers[i].get("error"))
    return answers

"""Per-node launch supervisor, shipped into each run directory (`<state_dir>/runs/<id>/`).

`supervise` runs for as long as the ranks do, started under `setsid nohup` so it outlives
the SSH session. It starts the node's rendered launch script, finds the rank processes
the way the fork makes them observable (see `classify` and `assign_ranks`), watches each
through a pidfd so a death is
seen at once with its time and exit status, and keeps a small TCP link to node 0's
supervisor (the hub): any rank death, a supervisor that disappears, or a missed
heartbeat makes every supervisor stop every rank on its node within seconds, also long
after `invoke launch` has returned. The first death (time, rank, exit status, last log
lines) is written to `state.json`, which `status`, `stop` and the control node read.

All processes of a run live in the supervisor's session (it is the session leader), so
teardown finds every one of them, re-parented or not; as child subreaper it reaps the
orphans too. Standalone on purpose: Python standard library only, no xpufleet import.

Usage: supervisor.py supervise|status|stop|prepare RUN_DIR
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from stat import S_ISREG
from typing import Any

PR_SET_CHILD_SUBREAPER = 36
TERMINAL_STATES = ("failed", "stopped")
#: `xpu-smi ps -j`: every process using a device, the device (a card: xpu-smi's device id)
#: and the device memory it holds, in kB (intel/xpumanager ial/cmn/cmd_ps.cpp `to_json`:
#: process_id, process_name, device_id, engines, shared_mem_size, mem_size; older
#: releases cli/src/comlet_ps.cpp + core_stub: the same list key; fixtures 16a, 16b).
#: xpu-smi lists itself on every device it opened.
PS_LIST_KEYS = ("device_util_by_proc_list", "process_list")
#: how often, and for how long after the schedulers are up, `xpu-smi ps` is asked
PS_INTERVAL_S = 1.0
DEVICE_WAIT_S = 120.0
#: how long the ranks wait for the spawn record to name them all before spawn order
SPAWN_RECORD_WAIT_S = 15.0
ORDER_ONLY = "rank by spawn order"
SPAWNED = "the rank the server started each process for (its spawn record)"


class Patterns:
    """The engine's process and log patterns, from run.json's `engine.patterns` (written by
    xpufleet/launch/engines/: SGLang's, vLLM's): what each process of the run is, which
    are the ranks, which helpers are watched, how a log line names its rank."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.roles = [(str(role), re.compile(rx)) for role, rx in doc["roles"]]
        self.rank_role = str(doc["rank_role"])
        self.watched_helpers = tuple(doc.get("watched_helpers", ()))
        self.log_prefix = re.compile(doc["log_prefix"])
        self.server_name = str(doc.get("server_name", "the server"))
        self.rank_title = re.compile(doc["rank_title"]) if doc.get("rank_title") else None
        self.discovery = str(doc.get("discovery", "children"))
        self.needs_log_tags = bool(doc.get("needs_log_tags", True))
        self.pending_roles = tuple(doc.get("pending_roles", ()))
        self.identified_by = str(doc.get("identified_by", ""))
        self.by_device = bool(doc.get("by_device", False))
        self.rank_line = re.compile(doc["rank_line"]) if doc.get("rank_line") else None
        self.spawned_rank = tuple(doc.get("spawned_rank") or ("", ""))


# -- /proc helpers ---------------------------------------------------------------------
def proc_stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/PID/stat (state first), or None if the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def is_running(pid: int | None) -> bool:
    if not pid:
        return False
    stat = proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0


def start_ticks(pid: int) -> int | None:
    """A process's start, in clock ticks after boot: what tells it from a later process
    with the same pid. Not the wall-clock start: that adds /proc/stat's btime, which moves
    when the wall clock is stepped (once in the lab every rank of a healthy run read as
    dead by that comparison; the cause was not pinned down)."""
    stat = proc_stat(pid)
    return None if stat is None else int(stat[19])


def start_time(pid: int) -> float | None:
    """Wall-clock start of a process (epoch seconds), for display and ordering."""
    ticks = start_ticks(pid)
    return None if ticks is None else boot_time() + ticks / clock_ticks()


def still_running(pid: int | None, entry: dict[str, Any]) -> bool:
    """The process recorded in `entry` runs (its pid not reused since)."""
    if not is_running(pid):
        return False
    if "start_ticks" in entry:
        return start_ticks(int(pid)) == entry["start_ticks"]  # type: ignore[arg-type]
    return start_time(int(pid)) == entry.get("started_at")  # type: ignore[arg-type]


def session_members(sid: int) -> list[int]:
    """Every process of session `sid` except the caller itself."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        stat = proc_stat(pid)
        if stat and int(stat[3]) == sid and pid != os.getpid() and stat[0] not in ("Z", "X"):
            members.append(pid)
    return members


def children_of(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            kids += [int(p) for p in (task / "children").read_text().split()]
    return kids


def process_names(pid: int) -> list[str]:
    """A process's comm and command line (what `ps` shows)."""
    names = []
    for name in ("comm", "cmdline"):
        with contextlib.suppress(OSError):
            raw = Path(f"/proc/{pid}/{name}").read_bytes().replace(b"\0", b" ")
            names.append(raw.decode(errors="replace").strip())
    return names


def process_name(pid: int) -> str:
    return " ".join(process_names(pid))


def zombie_status(pid: int) -> int | None:
    """waitpid-style status of a zombie (field 52 of /proc/PID/stat), before it is reaped."""
    stat = proc_stat(pid)
    if stat and stat[0] == "Z" and len(stat) > 49:
        return int(stat[49])
    return None


def parent_of(pid: int) -> tuple[int, str] | None:
    """(parent pid, parent's comm) of a running process."""
    stat = proc_stat(pid)
    if stat is None:
        return None
    ppid = int(stat[1])
    return ppid, (process_names(ppid) or ["?"])[0]


def describe_status(status: int | None, reaper: tuple[int, str] | None = None) -> dict[str, Any]:
    """waitpid status -> {code, signal, text}. None: its parent reaped it before we could
    read it (a Ray worker's raylet, a raylet's `ray start`); `reaper` names that parent."""
    if status is None:
        who = f"by its parent {reaper[1]} (pid {reaper[0]})" if reaper else "already"
        return {"code": None, "signal": None, "text": f"exit status unknown (reaped {who})"}
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return {"code": -sig, "signal": name, "text": f"killed by {name} (exit code {-sig})"}
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else status
    return {"code": code, "signal": None, "text": f"exited with code {code}"}


def descendants_of(pid: int) -> list[int]:
    """Every process below `pid` (children, their children, ...)."""
    found: list[int] = []
    todo = children_of(pid)
    while todo:
        child = todo.pop()
        if child not in found:
            found.append(child)
            todo += children_of(child)
    return found


def classify(names: list[str], patterns: Patterns) -> str:
    """A process's role from its comm and command line (the engine's roles, in order);
    "other" if unknown."""
    for role, pattern in patterns.roles:
        if any(pattern.search(name) for name in names):
            return role
    return "other"


def assign_ranks(
    children: list[tuple[int, list[str], float]],
    ranks: list[int],
    log_tags: set[str],
    patterns: Patterns,
) -> tuple[dict[int, int], dict[int, str], str | None]:
    """({rank: pid}, {pid: helper role}, why not yet) for the processes of the server.

    SGLang: the fork titles every scheduler `sglang::scheduler` (no index), and spawns them
    one after the other in rank order (entrypoints/engine.py: `for tp_rank in
    tp_rank_range: ... proc.start()`), AFTER the resource tracker (the first spawn starts
    it) and BEFORE the detokenizer. So: helpers are named by title, never counted as
    ranks; the k-th rank process created (start time, then pid) is the node's k-th rank;
    and, where the engine says so, the ranks are only taken once every planned rank's log
    tag is in the log, no process is still untitled, and the count matches. A title that
    carries the index (later upstream) wins over all of that. The spawn order is what the
    caller falls back on: the server's spawn record (`ranks_by_spawn_record`) comes first.
    vLLM: the Ray actors `ray::RayWorkerWrapper` of the node, in start order."""
    helpers: dict[int, str] = {}
    schedulers: list[tuple[float, int]] = []
    named: dict[int, int] = {}
    pending = 0
    for pid, names, started in children:
        role = classify(names, patterns)
        title = patterns.rank_title
        indexed = next((title.search(n) for n in names if title.search(n)), None) if title else None
        if indexed:
            named[int(indexed.group(1))] = pid
        elif role == patterns.rank_role:
            schedulers.append((started, pid))
        elif role in patterns.pending_roles:
            pending += 1
        elif role != "preflight rank":
            helpers[pid] = role
    if named:
        return {r: p for r, p in named.items() if r in ranks}, helpers, None
    if pending:
        return {}, helpers, f"{pending} child process(es) not titled yet"
    if len(schedulers) != len(ranks):
        return {}, helpers, f"{len(schedulers)} of {len(ranks)} rank processes started"
    missing = [r for r in ranks if str(r) not in log_tags] if patterns.needs_log_tags else []
    if missing:
        return {}, helpers, f"no TP{missing[0]} log lines yet"
    ordered = [pid for _, pid in sorted(schedulers)]
    return dict(zip(sorted(ranks), ordered, strict=True)), helpers, None


def logged_rank(pid: int, line: re.Pattern[str], limit: int = 1 << 20) -> int | None:
    """The rank a process wrote to its own output (its stdout when that is a file of its
    own, as Ray's worker-*.out), or None."""
    path = Path(f"/proc/{pid}/fd/1")
    try:
        if not S_ISREG(path.stat().st_mode):
            return None
        with path.open("rb") as fh:
            text = fh.read(limit).decode(errors="replace")
    except OSError:
        return None
    match = line.search(text)
    return int(match.group("rank")) if match else None


def ranks_by_own_log(pids: list[int], ranks: list[int], line: re.Pattern[str]) -> dict[int, int]:
    """{rank: pid} from each process's own rank line; {} until every planned rank is there
    exactly once."""
    found = {pid: logged_rank(pid, line) for pid in pids}
    mapping = {rank: pid for pid, rank in found.items() if rank is not None}
    return mapping if sorted(mapping) == sorted(ranks) and len(mapping) == len(pids) else {}


def parse_xpu_smi_ps(text: str) -> dict[int, dict[int, int]]:
    """{pid: {device id: device memory (kB)}} from `xpu-smi ps -j`; ValueError otherwise."""
    doc = json.loads(text)
    if not isinstance(doc, dict):
        raise ValueError("xpu-smi ps -j did not print a JSON object")
    if "error" in doc:
        raise ValueError(f"xpu-smi ps: {doc['error']}")
    rows = next((doc[k] for k in PS_LIST_KEYS if isinstance(doc.get(k), list)), None)
    if rows is None:
        raise ValueError("xpu-smi ps -j printed no process list")
    usage: dict[int, dict[int, int]] = {}
    for row in rows:
        pid, device = int(row["process_id"]), int(row["device_id"])
        devices = usage.setdefault(pid, {})
        devices[device] = devices.get(device, 0) + int(row.get("mem_size") or 0)
    return usage


def device_of(usage: dict[int, int]) -> int | None:
    """The device a process works on: the one holding most of its device memory (None
    when it shows on none, or on two alike)."""
    if not usage:
        return None
    most = max(usage.values())
    top = [device for device, mem in usage.items() if mem == most]
    return top[0] if len(top) == 1 else None


def ranks_by_device(
    schedulers: list[int], usage: dict[int, dict[int, int]], planned: dict[int, int]
) -> tuple[dict[int, int] | None, str | None, str | None]:
    """({rank: pid}, how, problem): each scheduler (pids in spawn order) takes the rank the
    plan puts on the card `xpu-smi ps` shows it working on. (None, None, None) while a
    scheduler shows on no device yet; (None, None, problem) when the cards disagree with
    the plan (a rank on a device the plan did not give it). xpu-smi ps reports cards, not
    tiles: ranks on the tiles of one card (FLAT) share its schedulers in spawn order."""
    cards = {pid: device_of(usage.get(pid, {})) for pid in schedulers}
    if any(card is None for card in cards.values()):
        return None, None, None
    want: dict[int, list[int]] = {}
    for rank, card in sorted(planned.items()):
        want.setdefault(card, []).append(rank)
    seen: dict[int, list[int]] = {}
    for pid in schedulers:
        seen.setdefault(int(cards[pid]), []).append(pid)  # type: ignore[arg-type]
    problems = []
    for card in sorted(set(want) | set(seen)):
        ranks, pids = want.get(card, []), seen.get(card, [])
        if len(ranks) != len(pids):
            planned_text = f"rank(s) {', '.join(map(str, ranks))}" if ranks else "no rank"
            shown = ", ".join(map(str, pids)) or "none"
            problems.append(
                f"device {card}: the plan puts {planned_text} there, xpu-smi ps shows "
                f"scheduler pid(s) {shown}"
            )
    if problems:
        return None, None, "; ".join(problems)
    mapping: dict[int, int] = {}
    for card, ranks in want.items():
        mapping.update(zip(ranks, seen[card], strict=True))
    how = "the device each rank process works on (xpu-smi ps)"
    if any(len(ranks) > 1 for ranks in want.values()):
        how += "; tiles of one card in spawn order"
    return mapping, how, None


def read_spawn_record(path: Path) -> list[dict[str, Any]]:
    """The entries of the server's spawn record (preflight.py `record_spawns`) whose pid
    is still the process recorded (same start ticks: a reused pid is another process)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    entries = []
    for line in lines:
        try:
            entry = json.loads(line)
            pid = int(entry["pid"])
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a crash mid-write
        if entry.get("start") is not None and start_ticks(pid) == entry["start"]:
            entries.append(entry)
    return entries


def ranks_by_spawn_record(
    entries: list[dict[str, Any]], schedulers: list[int], ranks: list[int], target: str, param: str
) -> dict[int, int] | None:
    """{rank: pid}: each scheduler's rank as the server passed it when it started the
    process (`param` of the function `target`); None unless the record names every
    scheduler, each with its own planned rank."""
    by_pid: dict[int, int] = {}
    for entry in entries:
        rank = (entry.get("args") or {}).get(param)
        function = str(entry.get("target", "")).rsplit(".", 1)[-1]
        if function == target and entry["pid"] in schedulers and isinstance(rank, int):
            by_pid[int(entry["pid"])] = rank
    if sorted(by_pid) != sorted(schedulers) or sorted(by_pid.values()) != sorted(ranks):
        return None
    return {rank: pid for pid, rank in by_pid.items()}


def device_mismatches(
    mapping: dict[int, int], usage: dict[int, dict[int, int]], planned: dict[int, int]
) -> tuple[bool, str | None]:
    """(every rank's process shows on a card, how the cards differ from the plan) for
    ranks whose processes are known: rank r's process must work on the card the plan
    gives rank r. xpu-smi ps reports cards, not tiles: two tiles of a card look alike."""
    cards = {rank: device_of(usage.get(pid, {})) for rank, pid in mapping.items()}
    if any(card is None for card in cards.values()):
        return False, None
    wrong = [
        f"rank {rank} (pid {mapping[rank]}) works on device {cards[rank]}, "
        f"the plan puts it on device {planned.get(rank)}"
        for rank in sorted(mapping)
        if cards[rank] != planned.get(rank)
    ]
    return True, "; ".join(wrong) or None


def log_tags(log: Path, prefix: re.Pattern[str]) -> set[str]:
    """Rank tags (SGLang's `TP<n>` prefixes) seen in the first part of the node's log."""
    try:
        with log.open("rb") as fh:
            text = fh.read(4 << 20).decode(errors="replace")
    except OSError:
        return set()
    return {tag for tag, _ in tag_lines(text.splitlines(), prefix)} - {"main"}


# -- ports --------------------------------------------------------------------------
def _hex_to_addr(text: str) -> str:
    if len(text) == 8:
        return socket.inet_ntop(socket.AF_INET, bytes.fromhex(text)[::-1])
    raw = bytes.fromhex(text)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    addr = socket.inet_ntop(socket.AF_INET6, words)
    return addr[7:] if addr.startswith("::ffff:") else addr


def listeners(port: int) -> list[tuple[str, int]]:
    """(address, socket inode) of every TCP socket listening on `port`."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], int(fields[9])
                addr_hex, port_hex = local.split(":")
                if state == "0A" and int(port_hex, 16) == port:
                    found.append((_hex_to_addr(addr_hex), inode))
    return found


def socket_owner(inode: int) -> int | None:
    target = f"socket:[{inode}]"
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) == target:
                        return int(entry.name)
    return None


def port_holders(address: str, port: int) -> list[dict[str, Any]]:
    """Who listens where `address:port` would bind (same address or a wildcard)."""
    wildcard = {"0.0.0.0", "::"}
    holders = []
    for addr, inode in listeners(port):
        if addr == address or addr in wildcard or address in wildcard:
            pid = socket_owner(inode)
            holders.append(
                {
                    "address": addr,
                    "pid": pid,
                    "command": process_name(pid)[:200] if pid else "",
                }
            )
    return holders


def check_ports(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {**p, "holders": port_holders(p["address"], int(p["port"]))} for p in cfg.get("ports", [])
    ]


# -- logs ---------------------------------------------------------------------------
def tag_lines(
    lines: Iterable[str], prefix: re.Pattern[str], start_tag: str = "main"
) -> list[tuple[str, str]]:
    """(rank tag, line) by the engine's log prefix: SGLang's `TP5` lines get "5", server
    lines "main"; a line naming a process (Ray's `(RayWorkerWrapper pid=N, ...)`) gets
    "pid=N" for the control node to turn into its host and rank. A traceback or other
    continuation line belongs to the line before it."""
    tagged = []
    tag = start_tag
    for line in lines:
        match = prefix.match(line)
        if match:
            found = match.groupdict()
            if found.get("rank"):
                tag = found["rank"]
            elif found.get("pid"):
                tag = f"pid={found['pid']}"
            else:
                tag = "main"
        tagged.append((tag, line))
    return tagged


def tail_for(log: Path, rank: int | None, prefix: re.Pattern[str], count: int = 12) -> list[str]:
    try:
        with log.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 256 * 1024))
            lines = fh.read().decode(errors="replace").splitlines()
    except OSError:
        return []
    if rank is None:
        return lines[-count:]
    mine = [line for tag, line in tag_lines(lines, prefix) if tag == str(rank)]
    return (mine or lines)[-count:]


# -- state --------------------------------------------------------------------------
def write_json(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(path)


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


class Link:
    """A line-delimited JSON connection to a peer supervisor."""

    def __init__(self, sock: socket.socket, peer: str) -> None:
        self.sock = sock
        self.peer = peer
        self.buffer = b""
        self.last_seen = time.monotonic()
        self.said: str | None = None

    def send(self, doc: dict[str, Any]) -> bool:
        try:
            self.sock.sendall((json.dumps(doc) + "\n").encode())
            return True
        except OSError:
            return False

    def receive(self) -> list[dict[str, Any]] | None:
        """Messages now available; None when the peer has closed the link."""
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError:
            return None
        if not data:
            return None
        self.last_seen = time.monotonic()
        self.buffer += data
        messages = []
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            with contextlib.suppress(ValueError):
                messages.append(json.loads(line))
        return messages


class Supervisor:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.cfg = read_json(run_dir / "run.json")
        self.host = self.cfg["host"]
        self.node_rank = int(self.cfg["node_rank"])
        self.hosts: list[str] = self.cfg["hosts"]
        self.log = run_dir / self.cfg["server"]["log"]
        self.patterns = Patterns(self.cfg["engine"]["patterns"])
        self.server: subprocess.Popen[bytes] | None = None
        self.rank_pids: dict[int, int] = {}
        self.pidfds: dict[int, tuple[str, int, int]] = {}  # fd -> (kind, rank, pid)
        self.reaped: dict[int, int] = {}
        self.parents: dict[int, tuple[int, str]] = {}  # watched pid -> (ppid, comm)
        self.links: dict[socket.socket, Link] = {}
        self.listener: socket.socket | None = None
        self.hub: Link | None = None
        self.hub_deadline = time.monotonic() + float(self.cfg["hub_connect_timeout_s"])
        self.stop_requested = False
        self.device_wait_until: float | None = None
        self.rank_line_until: float | None = None
        self.spawn_record_until: float | None = None
        self.next_ps = 0.0
        self.next_helpers = 0.0
        self.ending = False
        self.state: dict[str, Any] = {
            "run_id": self.cfg["run_id"],
            "host": self.host,
            "node_rank": self.node_rank,
            "state": "starting",
            "supervisor_pid": os.getpid(),
            "session": os.getsid(0),
            "started_at": time.time(),
            "server_pid": None,
            "ranks": {},
            "helpers": {},
            "first_death": None,
            "reason": None,
            "ended_at": None,
        }

    # -- bookkeeping ------------------------------------------------------
    def save(self) -> None:
        write_json(self.run_dir / "state.json", self.state)

    def say(self, text: str) -> None:
        print(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] supervisor {self.host}: {text}", flush=True)

    def hand_over_lock(self) -> None:
        """The node lock is held by this supervisor while the ranks run (a second launch
        or a provision is refused); it goes away when the supervisor ends."""
        lock = read_json(self.run_dir / "lock.json")
        path = Path(lock.get("path") or "/nonexistent")
        holder = read_json(path)
        if not lock or holder.get("token") != lock.get("token"):
            return
        holder.update(
            owner=f"launch {self.cfg['run_id']} (supervisor)",
            control_host=socket.gethostname(),
            pid=os.getpid(),
            node_pid=os.getpid(),
            run_id=self.cfg["run_id"],
        )
        write_json(path, holder)

    def release_lock(self) -> None:
        lock = read_json(self.run_dir / "lock.json")
        path = Path(lock.get("path") or "/nonexistent")
        if lock and read_json(path).get("token") == lock.get("token"):
            with contextlib.suppress(OSError):
                path.unlink()

    # -- peers --------------------------------------------------------------
    def open_hub(self) -> None:
        hub = self.cfg["hub"]
        if self.node_rank == 0:
            family = socket.AF_INET6 if ":" in hub["address"] else socket.AF_INET
            self.listener = socket.socket(family, socket.SOCK_STREAM)
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind((hub["address"], int(hub["port"])))
            self.listener.listen(64)
            self.listener.setblocking(False)

    def try_connect_hub(self) -> None:
        if self.node_rank == 0 or self.hub is not None:
            return
        hub = self.cfg["hub"]
        try:
            sock = socket.create_connection((hub["address"], int(hub["port"])), timeout=1.0)
        except OSError:
            return
        sock.setblocking(False)
        self.hub = Link(sock, self.hosts[0])
        self.links[sock] = self.hub
        self.hub.send({"type": "hello", "host": self.host, "node_rank": self.node_rank})
        self.say(f"connected to node 0's supervisor at {hub['address']}:{hub['port']}")

    def broadcast(self, doc: dict[str, Any], skip: Link | None = None) -> None:
        for link in list(self.links.values()):
            if link is not skip:
                link.send(doc)

    def on_message(self, link: Link, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "hello":
            link.peer = str(message.get("host"))
            self.say(f"{link.peer}'s supervisor joined")
        elif kind in ("abort", "stop"):
            link.said = kind
            if self.node_rank == 0:
                self.broadcast(message, skip=link)
            origin = message.get("origin") or {}
            if kind == "abort":
                reason = message.get("reason") or f"{link.peer} failed"
                self.end("failed", reason, remote=origin)
            else:
                self.end("stopped", f"stopped because {message.get('host', link.peer)} was stopped")

    def on_link_lost(self, link: Link) -> None:
        self.links.pop(link.sock, None)
        with contextlib.suppress(OSError):
            link.sock.close()
        if link is self.hub:
            self.hub = None
        if link.said or self.ending:
            return
        reason = f"lost contact with {link.peer}'s supervisor (node down or supervisor killed)"
        if self.node_rank == 0:
            self.broadcast({"type": "abort", "reason": reason, "host": self.host})
        self.end("failed", reason)

    # -- ranks --------------------------------------------------------------
    def start_server(self) -> None:
        script = self.run_dir / self.cfg["server"]["script"]
        log = self.log.open("ab")
        self.server = subprocess.Popen(
            ["/bin/bash", str(script)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(self.run_dir),
            preexec_fn=os.setpgrp,  # own group, same session: teardown finds it
        )
        log.close()
        self.state["server_pid"] = self.server.pid
        self.watch("server", -1, self.server.pid)
        self.say(f"started {script.name} as pid {self.server.pid}")

    def watch(self, kind: str, rank: int, pid: int) -> None:
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            self.on_exit(kind, rank, pid)
            return
        self.pidfds[fd] = (kind, rank, pid)
        parent = parent_of(pid)
        if parent and parent[0] != os.getpid():  # not ours to reap: say whose it was
            self.parents[pid] = parent

    def server_children(self) -> list[tuple[int, list[str], float]]:
        assert self.server is not None
        pids = (
            descendants_of(self.server.pid)
            if self.patterns.discovery == "descendants"
            else children_of(self.server.pid)
        )
        return [(pid, process_names(pid), start_time(pid) or 0.0) for pid in pids]

    def discover_ranks(self) -> None:
        if self.server is None:
            return
        if self.rank_pids:
            if time.monotonic() >= self.next_helpers:  # e.g. the detokenizer, started last
                self.next_helpers = time.monotonic() + PS_INTERVAL_S
                _, helpers, _ = assign_ranks(self.server_children(), [], set(), self.patterns)
                if self.record_helpers(helpers):
                    self.save()
            return
        children = self.server_children()
        tags = (
            log_tags(self.log, self.patterns.log_prefix) if self.patterns.needs_log_tags else set()
        )
        found, helpers, waiting = assign_ranks(children, self.cfg["ranks"], tags, self.patterns)
        if waiting or not found:
            return
        title = self.patterns.rank_title
        exact = self.ranks_by_spawn_record(found)
        if exact is None and self.awaiting_spawn_record():
            return
        if title and any(title.search(n) for _, names, _ in children for n in names):
            how = "process titles with the rank index"
        elif self.patterns.rank_line:
            by_log, how = self.ranks_by_own_log(found)
            if by_log is None:
                return
            found = by_log
        elif self.patterns.by_device:
            by_device, how = self.ranks_by_device(found, exact)
            if by_device is None:
                return
            found = by_device
        elif exact:
            found, how = exact, SPAWNED
        else:
            how = self.patterns.identified_by
        # helpers are recorded (and the detokenizer watched) once the ranks are known: a
        # child seen between fork and exec still carries its parent's command line
        self.record_helpers(helpers)
        for rank, pid in sorted(found.items()):
            self.rank_pids[rank] = pid
            self.state["ranks"][str(rank)] = {
                "pid": pid,
                "started_at": start_time(pid),
                "start_ticks": start_ticks(pid),
                "exit": None,
                "died_at": None,
                "cause": None,
            }
            self.watch("rank", rank, pid)
        self.state["identified_by"] = how
        self.save()
        expected = len(self.cfg["ranks"])
        if self.state["state"] == "starting" and len(self.rank_pids) >= expected:
            self.state["state"] = "running"
            shown = ", ".join(f"TP{r}=pid {p}" for r, p in sorted(self.rank_pids.items()))
            roles = ", ".join(
                f"{h['role']}=pid {p}" for p, h in sorted(self.state["helpers"].items())
            )
            self.say(
                f"all {expected} local ranks are up: {shown} (by {how}); helpers: {roles or 'none'}"
            )
            self.save()

    def record_helpers(self, helpers: dict[int, str]) -> bool:
        """Note helper processes not seen before (and watch the ones serving needs)."""
        added = False
        for pid, role in helpers.items():
            if role == "other" or str(pid) in self.state["helpers"]:
                continue
            self.state["helpers"][str(pid)] = {
                "role": role,
                "started_at": start_time(pid),
                "start_ticks": start_ticks(pid),
            }
            if role in self.patterns.watched_helpers:
                self.watch("helper", -1, pid)
            added = True
        return added

    @property
    def spawn_record(self) -> Path | None:
        """The server's spawn record, when the engine starts its ranks with one."""
        record = self.cfg.get("spawn_record")
        return self.run_dir / record if record and self.patterns.spawned_rank[0] else None

    def ranks_by_spawn_record(self, by_order: dict[int, int]) -> dict[int, int] | None:
        """{rank: pid} from the server's spawn record, if it names every rank process."""
        if self.spawn_record is None:
            return None
        target, param = self.patterns.spawned_rank
        entries = read_spawn_record(self.spawn_record)
        return ranks_by_spawn_record(
            entries, list(by_order.values()), sorted(by_order), target, param
        )

    def awaiting_spawn_record(self) -> bool:
        """True while a spawn record is expected but does not name every rank yet (the
        server appends each line just after the start; the child may be quicker)."""
        if self.spawn_record is None:
            return False
        now = time.monotonic()
        if self.spawn_record_until is None:
            self.spawn_record_until = now + SPAWN_RECORD_WAIT_S
        if now < self.spawn_record_until:
            return True
        if not self.state.get("spawn_record_missing"):
            self.state["spawn_record_missing"] = True
            self.say(f"the spawn record does not name every rank after {SPAWN_RECORD_WAIT_S:g} s")
        return False

    def ranks_by_device(
        self, by_order: dict[int, int], exact: dict[int, int] | None, fallback: bool = True
    ) -> tuple[dict[int, int] | None, str]:
        """The ranks, and the check that each works on the card the plan gives it
        (`xpu-smi ps`, asked once a second until every rank process shows on one). With
        the spawn record (`exact`) the ranks are its; without it, each process takes the
        rank the plan puts on its card, tiles of one card in spawn order. A card the plan
        did not give a rank is recorded as `device_problem`. (None, "") means: not
        decided yet -- and, without `fallback`, also: the cards cannot decide."""

        def unchecked(why: str) -> tuple[dict[int, int] | None, str]:
            if exact:
                return exact, f"{SPAWNED}; devices: {why}"
            return (by_order, f"{ORDER_ONLY} ({why})") if fallback else (None, "")

        planned = {int(d["rank"]): int(d["card"]) for d in self.cfg.get("rank_devices", [])}
        if sorted(planned) != sorted(by_order) or min(planned.values(), default=-1) < 0:
            return unchecked("the plan names no device per rank")
        smi = shutil.which("xpu-smi")
        if smi is None:
            return unchecked("not checked, no xpu-smi on this node")
        now = time.monotonic()
        wait = float(self.cfg.get("device_wait_s", DEVICE_WAIT_S))
        if self.device_wait_until is None:
            self.device_wait_until = now + wait
        if now < self.next_ps:
            return None, ""
        self.next_ps = now + PS_INTERVAL_S
        why = "not every rank process shows on a device"
        mapping: dict[int, int] | None = None
        how: str | None = None
        problem: str | None = None
        try:
            out = subprocess.run(
                [smi, "ps", "-j"], capture_output=True, text=True, timeout=30, check=False
            )
            usage = parse_xpu_smi_ps(out.stdout)
            if exact:
                seen, problem = device_mismatches(exact, usage, planned)
                if seen and not problem:
                    mapping, how = exact, f"{SPAWNED}; each on its planned card (xpu-smi ps)"
            else:
                schedulers = [by_order[rank] for rank in sorted(by_order)]  # spawn order
                mapping, how, problem = ranks_by_device(schedulers, usage, planned)
        except (OSError, subprocess.TimeoutExpired, ValueError, KeyError, TypeError) as exc:
            why = f"xpu-smi ps failed: {str(exc)[:200]}"
        if mapping is not None and how:
            return mapping, how
        if problem:
            if self.state.get("device_problem") != problem:
                self.say(f"xpu-smi ps disagrees with the plan: {problem}")
            self.state["device_problem"] = problem
            return unchecked("xpu-smi ps disagrees with the plan")
        if now >= self.device_wait_until:
            return unchecked(f"{why} in xpu-smi ps after {wait:g} s")
        return None, ""

    def ranks_by_own_log(self, by_order: dict[int, int]) -> tuple[dict[int, int] | None, str]:
        """The ranks each process logs in its own output (the engine's `rank_line`), asked
        until every rank is there; meanwhile, where the engine says so, the cards the
        processes work on (`ranks_by_device`); start order after `rank_line_wait_s`.
        (None, "") means: not decided yet."""
        now = time.monotonic()
        wait = float(self.cfg.get("rank_line_wait_s", DEVICE_WAIT_S))
        if self.rank_line_until is None:
            self.rank_line_until = now + wait
        line = self.patterns.rank_line
        mapping = line and ranks_by_own_log(list(by_order.values()), sorted(by_order), line)
        if mapping:
            return mapping, "the rank each worker logs in its own output"
        if self.patterns.by_device and not self.state.get("device_problem"):
            # no rank line (the fork logs it at DEBUG): the card each worker works on
            # names its local rank, once every worker shows on one in xpu-smi ps
            by_card, how = self.ranks_by_device(by_order, None, fallback=False)
            if by_card is not None:
                return by_card, how
        if now >= self.rank_line_until:
            return by_order, f"{ORDER_ONLY} (no rank line in the workers' output after {wait:g} s)"
        return None, ""

    def exit_status(self, pid: int) -> int | None:
        status = zombie_status(pid)
        if status is not None:
            return status
        if self.server is not None and pid == self.server.pid:
            with contextlib.suppress(ChildProcessError):
                _, status = os.waitpid(pid, 0)
                self.reaped[pid] = status
        return self.reaped.get(pid)

    def on_exit(self, kind: str, rank: int, pid: int) -> None:
        died_at = time.time()
        status = describe_status(self.exit_status(pid), self.parents.get(pid))
        cause = "stopped" if self.ending else "died"
        if kind == "rank":
            entry = self.state["ranks"][str(rank)]
            entry.update(exit=status, died_at=died_at, cause=cause)
        elif kind == "helper":
            entry = self.state["helpers"].get(str(pid), {})
            entry.update(exit=status, died_at=died_at, cause=cause)
        else:
            self.state["server_exit"] = {**status, "died_at": died_at, "cause": cause}
        if self.ending:
            self.save()
            return
        if kind == "rank":
            who = f"rank {rank}"
        elif kind == "helper":
            role = self.state["helpers"].get(str(pid), {}).get("role", "helper")
            who = f"{role} (helper process, not a rank)"
        else:
            who = str(self.cfg["server"].get("name") or self.patterns.server_name)
        death = {
            "host": self.host,
            "node_rank": self.node_rank,
            "rank": rank if kind == "rank" else None,
            "pid": pid,
            "what": who,
            "exit": status,
            "died_at": died_at,
        }
        reason = f"{who} on {self.host} (pid {pid}) {status['text']}"
        # the other nodes first (every millisecond here delays every node's stop); the
        # log lines after (the first death's tail is read from this node's state)
        self.broadcast({"type": "abort", "reason": reason, "origin": death, "host": self.host})
        death["tail"] = tail_for(
            self.log, rank if kind == "rank" else None, self.patterns.log_prefix
        )
        self.state["first_death"] = death
        self.say(f"{reason}: stopping every rank on every node")
        self.end("failed", reason)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.reaped[pid] = status

    # -- ending -------------------------------------------------------------
    def end(self, state: str, reason: str, remote: dict[str, Any] | None = None) -> None:
        if self.ending:
            return
        self.ending = True
        self.state["state"] = "stopping"
        self.state["stopping_at"] = time.time()
        self.state["reason"] = reason
        if remote:
            self.state["cause_elsewhere"] = remote
        self.save()
        grace = float(self.cfg.get("grace_s", 3))
        self.teardown(float(self.cfg.get("abort_grace_s", grace)) if state == "failed" else grace)
        self.state["state"] = state
        self.state["ended_at"] = time.time()
        self.save()

    def members(self) -> list[int]:
        """Every process of the run: the session's, and any descendant that left it (the
        supervisor is their subreaper)."""
        mine = [p for p in descendants_of(os.getpid()) if is_running(p)]
        return sorted(set(session_members(os.getsid(0))) | set(mine))

    def teardown(self, grace: float) -> None:
        """SIGTERM every process of the run, SIGKILL what is left after `grace` seconds
        (run.json: `grace_s` for a stop, the engine's `abort_grace_s` when something died)."""
        victims = self.members()
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        # when, and who needed SIGKILL (by comm): what an abort's duration is made of
        self.state["teardown"] = {
            "grace_s": grace,
            "sigterm_at": time.time(),
            "sigterm": len(victims),
        }
        deadline = time.monotonic() + grace
        while self.members() and time.monotonic() < deadline:
            self.collect_exits()
            time.sleep(0.05)
        left = {pid: (process_names(pid) or ["?"])[0] for pid in self.members()}
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if left:
            self.state["teardown"].update(sigkill_at=time.time(), sigkill=sorted(left.values()))
        deadline = time.monotonic() + 5
        while self.members() and time.monotonic() < deadline:
            self.collect_exits()
            time.sleep(0.05)
        # a multi-threaded rank shows as a zombie before its last thread is gone; its
        # pidfd turns readable only then: wait for every watched process to be gone
        deadline = time.monotonic() + 5
        while self.pidfds and time.monotonic() < deadline:
            self.collect_exits(0.05)
        self.say(f"stopped {len(victims)} process(es)")

    def collect_exits(self, timeout: float = 0) -> None:
        ready, _, _ = select.select(list(self.pidfds), [], [], timeout)
        for fd in ready:
            kind, rank, pid = self.pidfds.pop(fd)
            os.close(fd)
            self.on_exit(kind, rank, pid)
        self.reap()

    def on_signal(self, signum: int, frame: object) -> None:
        self.stop_requested = True

    # -- main loop ------------------------------------------------------------
    def run(self) -> int:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1)
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        (self.run_dir / "supervisor.pid").write_text(f"{os.getpid()}\n")
        self.save()
        self.hand_over_lock()
        try:
            self.open_hub()
        except OSError as exc:
            self.end("failed", f"cannot listen for peer supervisors on {self.cfg['hub']}: {exc}")
            self.release_lock()
            return 1
        self.start_server()
        heartbeat = float(self.cfg.get("heartbeat_s", 1.0))
        peer_timeout = float(self.cfg.get("peer_timeout_s", 6.0))
        next_beat = 0.0
        while not self.ending:
            if self.stop_requested:
                self.broadcast({"type": "stop", "host": self.host})
                self.end("stopped", f"stopped by the operator on {self.host}")
                break
            self.try_connect_hub()
            self.check_peers(peer_timeout)
            if self.ending:
                break
            watched = list(self.pidfds) + [s for s in self.links]
            if self.listener is not None:
                watched.append(self.listener)
            try:
                ready, _, _ = select.select(watched, [], [], 0.2)
            except InterruptedError:
                continue
            for item in ready:
                if self.ending:
                    break
                if item is self.listener:
                    self.accept()
                elif isinstance(item, int):
                    if item in self.pidfds:
                        kind, rank, pid = self.pidfds.pop(item)
                        os.close(item)
                        self.on_exit(kind, rank, pid)
                else:
                    link = self.links.get(item)
                    if link is None:
                        continue
                    messages = link.receive()
                    if messages is None:
                        self.on_link_lost(link)
                        continue
                    for message in messages:
                        self.on_message(link, message)
            if not self.ending:
                self.discover_ranks()
                self.reap()
                if time.monotonic() >= next_beat:
                    self.broadcast({"type": "ping"})
                    next_beat = time.monotonic() + heartbeat
        time.sleep(0.2)  # let the last messages reach the peers
        for link in list(self.links.values()):
            with contextlib.suppress(OSError):
                link.sock.close()
        self.release_lock()
        self.say(f"done: {self.state['state']} ({self.state['reason']})")
        return 0 if self.state["state"] == "stopped" else 1

    def accept(self) -> None:
        assert self.listener is not None
        with contextlib.suppress(BlockingIOError):
            sock, _ = self.listener.accept()
            sock.setblocking(False)
            self.links[sock] = Link(sock, "a node")

    def check_peers(self, peer_timeout: float) -> None:
        now = time.monotonic()
        if self.node_rank != 0 and self.hub is None and now > self.hub_deadline:
            hub = self.cfg["hub"]
            self.end(
                "failed", f"cannot reach node 0's supervisor at {hub['address']}:{hub['port']}"
            )
            return
        if self.node_rank == 0 and now > self.hub_deadline:
            joined = {link.peer for link in self.links.values()}
            missing = [h for h in self.hosts[1:] if h not in joined]
            if missing and not self.state.get("peers_complete"):
                reason = f"supervisor(s) on {', '.join(missing)} never connected"
                self.broadcast({"type": "abort", "reason": reason, "host": self.host})
                self.end("failed", reason)
                return
            self.state["peers_complete"] = True
        for link in list(self.links.values()):
            if now - link.last_seen > peer_timeout:
                reason = f"no heartbeat from {link.peer}'s supervisor for {peer_timeout:g} s"
                self.broadcast({"type": "abort", "reason": reason, "host": self.host})
                self.end("failed", reason)
                return


# -- commands run over SSH ------------------------------------------------------------
def status(run_dir: Path) -> dict[str, Any]:
    cfg = read_json(run_dir / "run.json")
    state = read_json(run_dir / "state.json")
    supervisor_pid = state.get("supervisor_pid")
    doc: dict[str, Any] = {
        "run_id": cfg.get("run_id"),
        "host": cfg.get("host"),
        "node_rank": cfg.get("node_rank"),
        "state": state.get("state", "not started"),
        "reason": state.get("reason"),
        "supervisor": {"pid": supervisor_pid, "alive": is_running(supervisor_pid)},
        "first_death": state.get("first_death"),
        "cause_elsewhere": state.get("cause_elsewhere"),
        "now": time.time(),
        "http": cfg.get("server"),
        "engine": (cfg.get("engine") or {}).get("name", "sglang"),
    }
    if doc["state"] not in TERMINAL_STATES and state and not doc["supervisor"]["alive"]:
        doc["state"] = "orphaned"
        doc["reason"] = "the supervisor is gone while its run was not finished"
    server_pid = state.get("server_pid")
    doc["server"] = {"pid": server_pid, "alive": is_running(server_pid)}
    ranks = []
    for rank, entry in sorted(state.get("ranks", {}).items(), key=lambda kv: int(kv[0])):
        pid = entry.get("pid")
        alive = still_running(pid, entry)
        started = entry.get("started_at")
        ranks.append(
            {
                "rank": int(rank),
                "pid": pid,
                "alive": alive,
                "uptime_s": round(time.time() - started, 1) if alive and started else None,
                "exit": entry.get("exit"),
                "cause": entry.get("cause"),
                "died_at": entry.get("died_at"),
            }
        )
    doc["ranks"] = ranks
    doc["expected_ranks"] = cfg.get("ranks", [])
    helpers = []
    for pid, entry in sorted(state.get("helpers", {}).items(), key=lambda kv: int(kv[0])):
        started = entry.get("started_at")
        alive = still_running(int(pid), entry)
        helpers.append(
            {
                "pid": int(pid),
                "role": entry.get("role"),
                "alive": alive,
                "uptime_s": round(time.time() - started, 1) if alive and started else None,
                "exit": entry.get("exit"),
                "cause": entry.get("cause"),
            }
        )
    doc["helpers"] = helpers
    doc["identified_by"] = state.get("identified_by")
    doc["device_problem"] = state.get("device_problem")
    doc["leftovers"] = session_members(int(state["session"])) if state.get("session") else []
    doc["ports"] = check_ports(cfg)
    return doc


def stop(run_dir: Path, wait_s: float = 15.0) -> dict[str, Any]:
    """Stop the run on this node: ask the supervisor, then make sure nothing is left."""
    state = read_json(run_dir / "state.json")
    supervisor_pid = state.get("supervisor_pid")
    asked = False
    if is_running(supervisor_pid):
        os.kill(int(supervisor_pid), signal.SIGTERM)
        asked = True
        deadline = time.monotonic() + wait_s
        while is_running(supervisor_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    killed = []
    sid = state.get("session")
    if sid:
        for pid in session_members(int(sid)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        deadline = time.monotonic() + 5
        while session_members(int(sid)) and time.monotonic() < deadline:
            time.sleep(0.05)
    engine_stop = run_engine_stop(read_json(run_dir / "run.json"))
    lock = read_json(run_dir / "lock.json")
    lock_path = Path(lock.get("path") or "/nonexistent")
    if lock and read_json(lock_path).get("token") == lock.get("token"):
        with contextlib.suppress(OSError):
            lock_path.unlink()
    final = status(run_dir)
    final.update(asked_supervisor=asked, killed_leftovers=killed, engine_stop=engine_stop)
    return final


def run_engine_stop(cfg: dict[str, Any], timeout: float = 60.0) -> dict[str, Any] | None:
    """The engine's own stop after the run's processes are gone (vLLM: `ray stop --force`,
    which also ends Ray processes that left the session); None when it has none."""
    argv = list((cfg.get("engine") or {}).get("stop_argv") or [])
    if not argv or not Path(argv[0]).exists():
        return None
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"argv": argv, "code": None, "output": str(exc)[-500:]}
    return {"argv": argv, "code": done.returncode, "output": (done.stdout + done.stderr)[-500:]}


def prepare(run_dir: Path) -> dict[str, Any]:
    """Before a launch takes the node lock: drop a lock whose supervisor is gone, and
    report who holds the ports the launch needs."""
    cfg = read_json(run_dir / "run.json")
    lock_path = Path(cfg.get("lock_path") or "/nonexistent")
    holder = read_json(lock_path)
    stale = False
    node_pid = holder.get("node_pid")
    if node_pid and holder.get("control_host") == socket.gethostname():
        alive = is_running(int(node_pid)) and "supervisor.py" in process_name(int(node_pid))
        if not alive:
            with contextlib.suppress(OSError):
                lock_path.unlink()
            stale = True
    drained = wait_for_closing_sockets(cfg.get("ports", []))
    return {
        "host": cfg.get("host"),
        "stale_lock_removed": stale,
        "ports": check_ports(cfg),
        "closing_sockets_left": drained,
    }


#: TCP states of a connection still closing (FIN_WAIT1/2, CLOSE_WAIT, CLOSING, LAST_ACK)
CLOSING_STATES = ("04", "05", "08", "0B", "09")


def closing_sockets(address: str, port: int) -> int:
    """Connections of an earlier run still closing on `address:port` (e.g. the store's
    accepted sockets after its rank was killed while peers lived): until they are gone a
    new listener there can fail with EADDRINUSE."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                addr_hex, port_hex = fields[1].split(":")
                if int(port_hex, 16) == port and fields[3] in CLOSING_STATES:
                    if _hex_to_addr(addr_hex) in (address, "0.0.0.0", "::"):
                        count += 1
    return count


def wait_for_closing_sockets(ports: list[dict[str, Any]], wait_s: float = 20.0) -> int:
    """Give an earlier run's closing connections on our ports up to `wait_s` to go."""
    deadline = time.monotonic() + wait_s
    while True:
        left = sum(closing_sockets(p["address"], int(p["port"])) for p in ports)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.2)


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    command, run_dir = argv[1], Path(argv[2])
    if command == "supervise":
        return Supervisor(run_dir).run()
    actions = {
        "status": status,
        "stop": stop,
        "prepare": prepare,
    }
    if command not in actions:
        print(f"unknown command {command}", file=sys.stderr)
        return 2
    print(json.dumps(actions[command](run_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""Wheels through the relay: the pushes of hosts that need the same files at about the
same time become ONE relay, so 16 nodes cost one copy from the control node, not 16.

Each host's wheel step runs in its own thread (provision's fan-out). The first host to
ask for a group of files (one wheel, or the lock's wheels) opens a batch and waits until
every host still working (provision's `arrive` .. `leave`) is inside a push, of this
batch or another, so no one else can join (or until a window runs out; without arrivals:
until every host of the run joined). Over srun the hosts drift apart by seconds (each
command is a step): a fixed 2 s window gave each its own relay, one copy per node. The
hosts that joined are relayed together, each writing only the files it lacks (the stream
is their union); late hosts open the next batch. Hosts the control node had to stop (the
head died) are relayed again among themselves; a host the relay did not reach gets its
own direct push (transfer.push_file), so one failed node never fails the others. A node
that cannot write a file (disk full) fails its step with its own error at once: a direct
push would only fail the same way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import HostError, TransferFailed
from ..transport import Session
from . import Member, NodeOutcome, StreamFile, file_hash, run_relay

#: how long the first host of a batch waits at most for the others
WINDOW_S = 15.0


@dataclass
class _Joined:
    session: Session
    dest_dir: str
    want: list[str]
    progress: Callable[[int], None] | None = None


@dataclass
class _Batch:
    members: list[_Joined] = field(default_factory=list)
    sources: dict[str, Path] = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)
    outcomes: dict[str, NodeOutcome] = field(default_factory=dict)
    control_bytes: int = 0
    relays: int = 0
    error: str | None = None


class FileRelay:
    """Shared by the host threads of one provision run."""

    def __init__(self, hosts: int, *, window: float = WINDOW_S, fanout: int = 1) -> None:
        self.hosts = hosts
        self.window = window
        self.fanout = fanout
        self._lock = threading.Lock()
        self._joined = threading.Condition(self._lock)
        self._open: dict[str, _Batch] = {}
        self._hashes: dict[str, str] = {}
        #: hosts working (arrived, not left; None: nobody announced itself) and how
        #: many of them are inside a push
        self._live: int | None = None
        self._inside = 0

    def arrive(self) -> None:
        """A host's provision starts: a batch may wait for it."""
        with self._lock:
            self._live = (self._live or 0) + 1
            self._joined.notify_all()

    def leave(self) -> None:
        """A host's provision ended (done or failed): no batch waits for it any more."""
        with self._lock:
            self._live = max(0, (self._live or 0) - 1)
            self._joined.notify_all()

    def _everyone_inside(self, batch: _Batch) -> bool:
        if self._live is None:
            return len(batch.members) >= self.hosts
        return self._inside >= self._live

    def push(
        self,
        session: Session,
        files: Sequence[tuple[Path, str]],
        dest_dir: str,
        fallback: Callable[[], int],
        *,
        group: str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> tuple[int, str]:
        """Bring each `(local, name)` to `dest_dir/name` on the session's node; returns
        (bytes the control node sent for this host, how: 'relayed ...' or 'direct ...').

        `group` names files pushed together (the lock's wheels): hosts of one group share
        one relay even when each lacks other files of it."""
        key = group or "\0".join(f"{local}\0{name}" for local, name in files)
        with self._lock:
            batch = self._open.get(key)
            leader = batch is None
            if batch is None:
                batch = self._open[key] = _Batch()
            batch.members.append(_Joined(session, dest_dir, [n for _, n in files], progress))
            batch.sources.update({name: local for local, name in files})
            self._inside += 1
            self._joined.notify_all()
        try:
            if leader:
                self._lead(key, batch)
            else:
                batch.done.wait()
        finally:
            with self._lock:
                self._inside -= 1
        outcome = batch.outcomes.get(session.host.name)
        if outcome is not None and outcome.write_errors:
            reasons = "; ".join(outcome.write_errors.values())
            raise TransferFailed(session.host.name, "relay", 1, reasons)
        if outcome is None or not outcome.done or outcome.bad:
            return fallback(), "direct push (the relay did not reach this node)"
        sent = batch.control_bytes if leader else 0
        upstream = outcome.fed_by or "control node"
        copies = "one copy sent" if batch.relays == 1 else f"{batch.relays} relays"
        return sent, f"relayed from {upstream} ({len(batch.members)} node(s), {copies})"

    def _lead(self, key: str, batch: _Batch) -> None:
        try:
            deadline = time.monotonic() + self.window
            with self._lock:
                while not self._everyone_inside(batch) and time.monotonic() < deadline:
                    self._joined.wait(timeout=max(0.01, deadline - time.monotonic()))
                del self._open[key]
            items = []
            for name in sorted({n for m in batch.members for n in m.want}):
                local = batch.sources[name]
                if str(local) not in self._hashes:
                    self._hashes[str(local)] = file_hash(local)
                items.append(StreamFile(name, local.stat().st_size, self._hashes[str(local)]))
            todo = list(batch.members)
            # the second round: the nodes stopped because their upstream died
            for _round in range(2):
                self._relay(batch, todo, items)
                stopped = {n for n, o in batch.outcomes.items() if not o.done and o.stopped}
                todo = [m for m in todo if m.session.host.name in stopped]
                if not todo:
                    break
        except HostError as exc:
            batch.error = exc.message
        finally:
            batch.done.set()

    def _relay(self, batch: _Batch, todo: list[_Joined], items: list[StreamFile]) -> None:
        wanted = {n for m in todo for n in m.want}
        stream = [item for item in items if item.name in wanted]
        members = [
            Member(joined.session, joined.dest_dir, joined.want, "stdin" if i == 0 else "socket")
            for i, joined in enumerate(todo)
        ]
        seen = {m.session.host.name: 0 for m in todo}
        advance = {m.session.host.name: m.progress for m in todo if m.progress}

        def on_progress(host: str, written: int) -> None:
            step = advance.get(host)
            if step and written > seen[host]:
                step(written - seen[host])
                seen[host] = written

        result = run_relay(
            members,
            stream,
            {},
            fanout=self.fanout,
            source=batch.sources,
            on_progress=on_progress,
        )
        batch.relays += 1
        batch.control_bytes += result.control_bytes
        batch.outcomes.update(result.nodes)


__all__ = ["FileRelay", "WINDOW_S"]

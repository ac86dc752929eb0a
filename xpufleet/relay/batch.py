"""Wheels through the relay: the pushes of hosts that need the same file at about the
same time become ONE relay, so 16 nodes cost one copy from the control node, not 16.

Each host's wheel step runs in its own thread (provision's fan-out). The first host to
ask for a file opens a batch and waits a short window (or until every host of the run
has joined); the hosts that joined are relayed together; late hosts open the next
batch. A host the relay did not reach gets its own direct push (transfer.push_file),
so one failed node never fails the others.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import HostError
from ..transport import Session
from . import Member, RelayResult, StreamFile, run_relay

#: how long the first host of a batch waits for the others
WINDOW_S = 2.0


@dataclass
class _Batch:
    members: list[tuple[Session, str]] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    result: RelayResult | None = None
    error: str | None = None


def blake2b_of(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=32)
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class FileRelay:
    """Shared by the host threads of one provision run."""

    def __init__(self, hosts: int, *, window: float = WINDOW_S, fanout: int = 1) -> None:
        self.hosts = hosts
        self.window = window
        self.fanout = fanout
        self._lock = threading.Lock()
        self._joined = threading.Condition(self._lock)
        self._open: dict[tuple[str, str], _Batch] = {}
        self._hashes: dict[str, str] = {}

    def push(
        self,
        session: Session,
        local: Path,
        dest_dir: str,
        name: str,
        fallback: Callable[[], int],
    ) -> tuple[int, str]:
        """Bring `local` to `dest_dir/name` on the session's node; returns (bytes the
        control node sent for this host, how: 'relay ...' or 'direct')."""
        key = (str(local), name)
        with self._lock:
            batch = self._open.get(key)
            leader = batch is None
            if batch is None:
                batch = self._open[key] = _Batch()
            batch.members.append((session, dest_dir))
            self._joined.notify_all()
        if leader:
            self._lead(key, batch, local, name)
        else:
            batch.done.wait()
        outcome = batch.result.nodes.get(session.host.name) if batch.result else None
        if outcome is None or not outcome.done or outcome.bad:
            return fallback(), "direct push (the relay did not reach this node)"
        sent = batch.result.control_bytes if leader and batch.result else 0
        upstream = outcome.fed_by or "control node"
        return sent, f"relayed from {upstream} ({len(batch.members)} node(s), one copy sent)"

    def _lead(self, key: tuple[str, str], batch: _Batch, local: Path, name: str) -> None:
        try:
            deadline = time.monotonic() + self.window
            with self._lock:
                while len(batch.members) < self.hosts and time.monotonic() < deadline:
                    self._joined.wait(timeout=max(0.01, deadline - time.monotonic()))
                del self._open[key]
                if str(local) not in self._hashes:
                    self._hashes[str(local)] = blake2b_of(local)
            item = StreamFile(name, local.stat().st_size, self._hashes[str(local)])
            members = [
                Member(session, dest, [name], "stdin" if i == 0 else "socket")
                for i, (session, dest) in enumerate(batch.members)
            ]
            batch.result = run_relay(members, [item], {}, fanout=self.fanout, source={name: local})
        except HostError as exc:
            batch.error = exc.message
        finally:
            batch.done.set()


__all__ = ["FileRelay", "WINDOW_S"]

"""Bounded parallel fan-out over hosts, one reused session per host.

Fabric's ThreadingGroup starts a thread per host without bound and raises a
GroupException Invoke cannot turn into an exit code (REFERENCE §8); this pool
bounds concurrency with `forks` and returns one outcome per host instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Generic, TypeVar

from .errors import HostError, UnreachableError
from .host import Host
from .transport import Session, SSHOptions

T = TypeVar("T")
#: after Ctrl-C, how long running work gets to see `cancelled` and end before the
#: sessions are closed under it (a command polls it every 50 ms; a connect may take longer)
CANCEL_GRACE_S = 5.0


@dataclass
class Outcome(Generic[T]):
    """What happened on one host: a value, or the error that stopped it."""

    host: Host
    value: T | None = None
    error: HostError | None = None
    skipped: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and not self.skipped

    @property
    def reachable(self) -> bool:
        return not isinstance(self.error, UnreachableError)


def connect(host: Host, options: SSHOptions, cancelled: threading.Event | None = None) -> Session:
    """The host's session over its connector (`connector` variable: ssh or slurm);
    `cancelled` ends an SSH session's running command (see Session)."""
    if host.var.connector == "slurm":
        from .slurm import SlurmSession  # a transport.Connector, as Session is

        return SlurmSession(host, options)  # type: ignore[return-value]
    return Session(host, options, cancelled)


class SessionPool:
    """Sessions opened lazily, once per host, and closed together at the end."""

    def __init__(self, hosts: Iterable[Host], options: SSHOptions, forks: int = 32) -> None:
        self.hosts = list(hosts)
        self.options = options
        self.forks = max(1, forks)
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        #: hosts that failed to connect once are not retried within the task
        self.unreachable: dict[str, UnreachableError] = {}
        #: set when a `map` is interrupted: every session's running command ends within
        #: one poll and opens nothing new (cleared when the next `map` starts)
        self.cancelled = threading.Event()

    def session(self, host: Host) -> Session:
        with self._lock:
            if host.name in self.unreachable:
                raise self.unreachable[host.name]
            session = self._sessions.get(host.name)
            if session is None:
                session = self._sessions[host.name] = connect(host, self.options, self.cancelled)
        try:
            return session.open()
        except UnreachableError as exc:
            with self._lock:
                self.unreachable[host.name] = exc
            raise

    def map(
        self,
        work: Callable[[Session], T],
        hosts: Iterable[Host] | None = None,
        *,
        fail_fast: bool = False,
        on_done: Callable[[Outcome[T]], None] | None = None,
    ) -> dict[str, Outcome[T]]:
        """Run `work` on every host (at most `forks` at once); results in inventory order."""
        targets = list(self.hosts if hosts is None else hosts)
        outcomes: dict[str, Outcome[T]] = {}
        stop = threading.Event()
        self.cancelled.clear()  # an earlier interrupted map's; this one is new work

        def one(host: Host) -> Outcome[T]:
            if stop.is_set():
                return Outcome(host, skipped=True)
            try:
                return Outcome(host, value=work(self.session(host)))
            except HostError as exc:
                return Outcome(host, error=exc)

        pool = ThreadPoolExecutor(max_workers=min(self.forks, max(1, len(targets))))
        pending: set[Future[Outcome[T]]] = set()
        try:
            pending = {pool.submit(one, h) for h in targets}
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    outcome = future.result()
                    outcomes[outcome.host.name] = outcome
                    if outcome.error is not None and fail_fast:
                        stop.set()
                    if on_done:
                        on_done(outcome)
        except BaseException:
            # Ctrl-C: start nothing new, end what runs (its commands see `cancelled`), and
            # let it leave paramiko before the sessions close: a channel closed under a
            # worker inside exec_command can leave it waiting forever, and the
            # interpreter's exit waits for that worker (a second Ctrl-C skips the wait)
            stop.set()
            self.cancelled.set()
            pool.shutdown(wait=False, cancel_futures=True)
            wait(pending, timeout=CANCEL_GRACE_S)
            raise
        pool.shutdown()
        return {h.name: outcomes[h.name] for h in targets}

    def close(self) -> None:
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for session in sessions:
            session.close()

    def __enter__(self) -> SessionPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def fan_out(
    hosts: Iterable[Host],
    work: Callable[[Session], T],
    options: SSHOptions,
    *,
    forks: int = 32,
    fail_fast: bool = False,
) -> dict[str, Outcome[T]]:
    """One-shot fan-out: open, work, close."""
    with SessionPool(hosts, options, forks) as pool:
        return pool.map(work, fail_fast=fail_fast)

"""What a step's `apply` sees (its own module: steps and the engine both import it)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..errors import CommandFailed, PipFailed
from ..relay.batch import FileRelay
from ..transport import CommandResult, Session

#: transfer(host, label, total_bytes) -> context manager yielding an `advance(n)` callback
TransferFactory = Callable[
    [str, str, int], contextlib.AbstractContextManager[Callable[[int], None]]
]


@contextlib.contextmanager
def no_progress(host: str, label: str, total: int) -> Iterator[Callable[[int], None]]:
    yield lambda n: None


@dataclass
class ApplyContext:
    """What a step's apply sees: the session, its own probed state, progress hooks."""

    session: Session
    state: str
    transfers: TransferFactory = no_progress
    bytes_sent: int = 0
    #: shared by every host of the run: wheels through the relay (xpufleet/relay)
    relay: FileRelay | None = None

    def run(self, command: str, *, stdin: bytes | str | None = None) -> CommandResult:
        return self.session.run(command, stdin=stdin)

    def pip(self, command: str) -> CommandResult:
        """A pip command: its failure is a PipFailed (the runbook's pip section)."""
        try:
            return self.run(command)
        except CommandFailed as exc:
            raise PipFailed.of(exc) from exc

    def transfer(
        self, label: str, total: int
    ) -> contextlib.AbstractContextManager[Callable[[int], None]]:
        return self.transfers(self.session.host.name, label, total)

"""Streamed output (`logs`, `logs --follow`) written by one daemon thread.

Why: the lines come from the session pool's worker threads. When whoever reads the
tool's output stops reading (a test that took its first line, a stalled pager), a
worker writing to the full pipe blocks in write(); Ctrl-C then cannot end the tool,
because the interpreter's exit joins every pool worker, and a worker holding stdout's
buffer lock also blocks the "interrupted" message. Here workers only queue; one daemon
thread writes with os.write (no Python buffer lock held while blocked), and the exit
does not wait for a daemon thread. A reader that went away (EPIPE) ends the writing.
"""

from __future__ import annotations

import os
import queue
import threading
from types import TracebackType


class LineWriter:
    """`put(text)` from any thread; `close()` writes what is queued, then stops."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write, name="line-writer", daemon=True)
        self._thread.start()

    def put(self, text: str) -> None:
        self._queue.put(text.encode(errors="replace"))

    def _write(self) -> None:
        while (data := self._queue.get()) is not None:
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(self.fd, view) :]
            except OSError:  # the reader is gone: nothing more can be shown
                return

    def close(self) -> None:
        """Everything queued so far written (or the reader gone)."""
        self._queue.put(None)
        self._thread.join()

    def __enter__(self) -> LineWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if kind is None:
            self.close()
        # on Ctrl-C or an error: do not wait on a reader that may never read again

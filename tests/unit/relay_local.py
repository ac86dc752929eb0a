"""A stand-in for the SSH side of the relay, for unit tests: `LocalSession.open_channel`
runs the command with `sh -c` on this machine (the real node script, real TCP links on
127.0.0.1), with the same contract as `transport.Channel`: send (errors as HostError),
lines, stderr, exit_status, close (the command sees EOF on stdin, as over SSH)."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import threading
from collections.abc import Iterator
from typing import IO

from xpufleet.errors import HostError
from xpufleet.host import Host


class LocalChannel:
    def __init__(self, host: str, command: str, fsize: int | None, delay: float = 0) -> None:
        def cap() -> None:
            if fsize is not None:  # writes beyond it fail (EFBIG) like a full disk
                resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

        self.host = host
        self.proc = subprocess.Popen(
            ["sh", "-c", f"sleep {delay}; {command}" if delay else command],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=cap,
            start_new_session=True,  # kill() reaches the command, not only sh
        )
        self.stderr = b""
        self._lock = threading.Lock()

    @property
    def _stdin(self) -> IO[bytes]:
        assert self.proc.stdin is not None
        return self.proc.stdin

    def send(self, data: bytes) -> None:
        try:
            with self._lock:
                self._stdin.write(data)
                self._stdin.flush()
        except (OSError, ValueError) as exc:
            raise HostError(self.host, f"transfer cut off: {exc}") from exc

    def lines(self) -> Iterator[str]:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            yield raw.decode(errors="replace").rstrip("\n")
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()

    def exit_status(self, timeout: float = 30.0) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        with self._lock:
            try:
                self._stdin.close()
            except OSError:
                pass


class LocalSession:
    def __init__(self, name: str, fsize: int | None = None, delay: float = 0) -> None:
        self.host = Host(name, "127.0.0.1")
        self.fsize = fsize
        self.delay = delay  # seconds before the command starts (a node slow to start)
        self.channels: list[LocalChannel] = []

    def open_channel(self, command: str, *, bulk: bool = False) -> LocalChannel:
        channel = LocalChannel(self.host.name, command, self.fsize, self.delay)
        self.channels.append(channel)
        return channel

    def kill(self) -> None:
        """SIGKILL the node's commands (a node that dies)."""
        for channel in self.channels:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(channel.proc.pid, signal.SIGKILL)

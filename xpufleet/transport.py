"""SSH to one host: a Fabric connection with verified host keys and mapped errors.

Commands go through raw Paramiko channels of the Fabric connection, so stdin (the
doctor probe, wheel bytes) is written in large chunks instead of Invoke's slow
byte-wise in_stream (REFERENCE §8). Every low-level error becomes an xpufleet
HostError here, and nowhere else.
"""

from __future__ import annotations

import abc
import contextlib
import json
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import paramiko
from fabric import Config, Connection

from . import shell
from .errors import (
    AuthenticationFailed,
    BecomeFailed,
    CommandFailed,
    CommandTimeout,
    ConnectionLost,
    ConnectionRefused,
    ConnectTimeout,
    HostError,
    HostKeyChanged,
    HostKeyUnknown,
    Interrupted,
    NameNotResolved,
    ProtocolError,
    UnreachableError,
    XpufleetError,
    stderr_tail,
)
from .host import Host
from .jump import JumpHub

CHUNK = 1 << 20
#: writes a command's stdin through the `write` it is given
Feed = Callable[[Callable[[bytes], None]], None]
BULK_WINDOW = 64 << 20
BULK_PACKET = 32768


@dataclass(frozen=True)
class SSHOptions:
    """How to reach hosts; one per task, shared by all sessions."""

    known_hosts: Path
    key_file: str | None = None
    connect_timeout: float = 10.0
    command_timeout: float | None = 600.0
    #: the task's jump-host connections, shared by every session (see jump.py)
    hub: JumpHub = field(default_factory=JumpHub, compare=False, repr=False)
    #: sudo password for hosts with ansible_become (fed over stdin, never in argv/logs)
    become_password: str | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class CommandResult:
    host: str
    command: str
    exit_status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


def _fabric_config() -> Config:
    """A Fabric config that reads nothing from ~/.ssh and no user config files."""
    config = Config(lazy=True)
    config.load_ssh_configs = False
    return config


def map_connect_error(host: Host, exc: BaseException) -> HostError:
    """Translate what paramiko/socket raise while connecting into one xpufleet error."""
    where = f"{host.address}:{host.port}"
    if isinstance(exc, HostError):
        return exc
    if isinstance(exc, socket.gaierror):
        return NameNotResolved(host.name, f"name does not resolve: {host.address} ({exc})")
    if isinstance(exc, paramiko.BadHostKeyException):
        return HostKeyChanged(
            host.name,
            f"host key CHANGED for {where}: got {exc.key.get_name()} "
            f"{exc.key.fingerprint}, known_hosts has {exc.expected_key.fingerprint}; "
            "refusing to connect (if the node was reinstalled, remove the old key and "
            "run `invoke trust`)",
        )
    if isinstance(exc, paramiko.AuthenticationException):
        return AuthenticationFailed(
            host.name, f"authentication failed for {host.user}@{where}: {exc}"
        )
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        errnos = {getattr(e, "errno", None) for e in exc.errors.values()}
        if errnos <= {111}:
            return ConnectionRefused(host.name, f"connection refused: {where}")
        return UnreachableError(host.name, f"cannot connect to {where}: {exc}")
    if isinstance(exc, ConnectionRefusedError):
        return ConnectionRefused(host.name, f"connection refused: {where}")
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return ConnectTimeout(host.name, f"connection to {where} timed out")
    if isinstance(exc, paramiko.SSHException) and "known_hosts" in str(exc):
        return HostKeyUnknown(
            host.name,
            f"host key UNKNOWN for {where}: not in the known_hosts file; "
            "check the fingerprint and run `invoke trust`",
        )
    if isinstance(exc, (paramiko.SSHException, EOFError, OSError)):
        return UnreachableError(host.name, f"SSH to {where} failed: {exc or type(exc).__name__}")
    raise exc


class JsonAnswers:
    """`run_json` over the session's own `run`: the SSH and the Slurm session share it."""

    def run_json(self, command: str, *, last_line: bool = False, **kwargs: Any) -> Any:
        """Run a command that answers one JSON document on stdout (its last line, with
        `last_line`; `run`'s other arguments); anything else is a ProtocolError naming
        the host and the first bytes received."""
        out = self.run(command, **kwargs).stdout  # type: ignore[attr-defined]
        text = (out.strip().splitlines() or [""])[-1] if last_line else out
        try:
            return json.loads(text)
        except ValueError:
            host = self.host.name  # type: ignore[attr-defined]
            raise ProtocolError(
                host, f"expected JSON, got {out[:120]!r} (from {command[:80]!r})"
            ) from None


@dataclass(frozen=True)
class Prepared:
    """A command as a connector runs it once."""

    #: what the caller asked for (named in errors)
    command: str
    #: what runs: the command behind its quoted env assignments
    full: str
    stdin: bytes | None
    timeout: float | None
    #: takes stdout block by block as it arrives (the result's stdout is then empty)
    stdout_to: Callable[[bytes], None] | None


class Connector(JsonAnswers, abc.ABC):
    """What tasks use of a host's connection, whichever way it reaches the node: over SSH
    (`Session`) or as Slurm job steps (`slurm.SlurmSession`); `executor.connect` picks
    one by the host's `connector` variable. `run` (and `run_json`) are shared: a
    connector supplies `_execute` (one command, CommandTimeout on a timeout) and, as
    tasks need them, `_stream(command, feed, timeout)` (behind `stream_to`: bulk bytes
    into a command's stdin), `follow(command, on_line, cancelled)` (`tail -F`) and
    `open_channel(command, bulk=)` (a command talked to while it runs: the relay)."""

    host: Host
    #: commands (channels, steps) started so far: tests and benchmarks count them
    round_trips: int

    def run(
        self,
        command: str,
        *,
        stdin: bytes | str | None = None,
        env: Mapping[str, object] | None = None,
        timeout: float | None = None,
        check: bool = True,
        stdout_to: Callable[[bytes], None] | None = None,
    ) -> CommandResult:
        """Run a shell command; env values are quoted; `stdout_to` takes stdout block by
        block as it arrives (a fetched file never sits in memory; the result's stdout is
        then empty)."""
        full = shell.env_assignments(env or {}) + command
        data = stdin.encode() if isinstance(stdin, str) else stdin
        out, err, status = self._execute(Prepared(command, full, data, timeout, stdout_to))
        if check and status != 0:
            raise CommandFailed(self.host.name, command, status, err or out)
        return CommandResult(self.host.name, command, status, out, err)

    @abc.abstractmethod
    def _execute(self, cmd: Prepared) -> tuple[str, str, int]:
        """Run `cmd.full` once: (stdout, stderr, exit status)."""

    def stream_to(
        self,
        source: BinaryIO,
        command: str,
        *,
        progress: Callable[[int], None] | None = None,
        timeout: float | None = None,
    ) -> CommandResult:
        """Stream bytes from `source` into a command's stdin (e.g. `cat > tmp`)."""

        def feed(write: Callable[[bytes], None]) -> None:
            while block := source.read(CHUNK):
                write(block)
                if progress:
                    progress(len(block))

        return self._stream(command, feed, timeout)

    def _stream(self, command: str, feed: Feed, timeout: float | None) -> CommandResult:
        """Run `command` once, its stdin written by `feed`; CommandFailed unless it exits 0."""
        raise NotImplementedError(f"{type(self).__name__} streams no bytes")


@contextlib.contextmanager
def mapped(host: str, what: str) -> Iterator[None]:
    """Around every channel and command: what paramiko, sockets and EOF raise becomes
    ConnectionLost naming the host and `what` was going on; our own errors pass."""
    try:
        yield
    except XpufleetError:
        raise
    except (OSError, EOFError, paramiko.SSHException) as exc:
        raise ConnectionLost(host, f"{what}: {exc or type(exc).__name__}") from exc


class Session(Connector):
    """One open SSH connection to one host, reused for every command of a task.

    `cancelled` (the pool's Ctrl-C) ends a running command within one poll and keeps new
    channels from opening, so no worker is left inside paramiko when the pool closes.
    """

    def __init__(
        self, host: Host, options: SSHOptions, cancelled: threading.Event | None = None
    ) -> None:
        self.host = host
        self.options = options
        self.round_trips = 0
        #: connections opened again after one was found dead between commands
        self.reconnects = 0
        self._reconnecting = threading.Lock()
        self.cancelled = cancelled or threading.Event()
        self._conn: Connection | None = None
        #: inside `elevated()`: commands run through sudo as the host's become user
        self.becoming = False
        self._sudo_asks: bool | None = None  # does sudo want a password here?

    # -- connection -------------------------------------------------------
    def open(self) -> Session:
        if self._conn is not None:
            return self
        if self.cancelled.is_set():
            raise Interrupted(self.host.name, "interrupted before connecting")
        host, options = self.host, self.options
        key_file = host.key_file or options.key_file
        timeout = host.connect_timeout or options.connect_timeout
        connect_kwargs: dict[str, object] = {
            "look_for_keys": False,
            "allow_agent": False,
            "banner_timeout": timeout,
            "auth_timeout": timeout,
        }
        if key_file:
            connect_kwargs["key_filename"] = [str(key_file)]
        if host.jump:  # through the bastion's shared connection (released in close())
            connect_kwargs["sock"] = options.hub.tunnel(host, options, timeout)
        conn = Connection(
            host.address,
            user=host.user,
            port=host.port,
            config=_fabric_config(),
            connect_timeout=int(max(1, timeout)),
            connect_kwargs=connect_kwargs,
        )
        client = paramiko.SSHClient()
        known_hosts = known_hosts_for(host, options)
        if known_hosts.exists():
            client.load_host_keys(str(known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        conn.client = client
        try:
            conn.open()
        except Exception as exc:  # noqa: BLE001 - mapped into our tree right here
            conn.close()
            if host.jump:
                options.hub.release(host, options)
            raise map_connect_error(host, exc) from exc
        self._conn = conn
        return self

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
            if self.host.jump:
                self.options.hub.release(self.host, self.options)

    def __enter__(self) -> Session:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def transport(self) -> paramiko.Transport:
        self.open()
        assert self._conn is not None
        transport = self._conn.client.get_transport()
        if transport is None or not transport.is_active():
            raise ConnectionLost(self.host.name, "SSH connection is closed")
        return transport

    # -- commands ---------------------------------------------------------
    def _execute(self, cmd: Prepared) -> tuple[str, str, int]:
        """One channel; stdin is sent in large chunks (after sudo's password line)."""
        timeout = self.options.command_timeout if cmd.timeout is None else cmd.timeout
        full, secret = self._sudo(cmd.full)
        data = secret + (cmd.stdin or b"") if secret else cmd.stdin

        def send_stdin(channel: paramiko.Channel) -> None:
            if data:
                channel.sendall(data)

        stdout, stderr, status = self._exec(
            full, send_stdin, timeout, lost="connection lost", stdout_to=cmd.stdout_to
        )
        out = stdout.decode(errors="replace")
        err = stderr.decode(errors="replace")
        if status is None:
            raise CommandTimeout(
                self.host.name, cmd.command, -1, err + f"\ntimed out after {timeout}s"
            )
        if secret is not None:
            self._check_sudo(status, err)
        return out, err, status

    def _stream(self, command: str, feed: Feed, timeout: float | None) -> CommandResult:
        """The sudo password goes first; a cancelled session stops between blocks."""
        timeout = self.options.command_timeout if timeout is None else timeout
        command, secret = self._sudo(command)

        def send_source(channel: paramiko.Channel) -> None:
            if secret:
                channel.sendall(secret)

            def write(block: bytes) -> None:
                if self.cancelled.is_set():
                    raise Interrupted(self.host.name, "interrupted: transfer abandoned")
                channel.sendall(block)

            feed(write)

        stdout, stderr, status = self._exec(
            command, send_source, timeout, lost="transfer cut off", bulk=True
        )
        err = stderr.decode(errors="replace")
        if status is None:
            raise CommandTimeout(self.host.name, command, -1, err)
        if secret is not None:
            self._check_sudo(status, err)
        if status != 0:
            raise CommandFailed(self.host.name, command, status, err)
        return CommandResult(self.host.name, command, status, stdout.decode(errors="replace"), err)

    def open_channel(self, command: str, *, bulk: bool = False, elevate: bool = True) -> Channel:
        """A running command to talk to while it runs (the relay): send, read lines, wait.

        `elevate=False` for a command that already went through `_sudo` (run, stream_to):
        wrapped twice, the inner sudo needs no password and the command reads the line."""
        if self.cancelled.is_set():
            raise Interrupted(self.host.name, "interrupted before the command started")
        # A large window keeps the pipe full on fast links (2 MB default: ~55 MB/s here).
        window = {"window_size": BULK_WINDOW, "max_packet_size": BULK_PACKET} if bulk else {}
        first = None
        if elevate:
            command, first = self._sudo(command)  # as the become user when elevated
        # a connection cut a moment ago may still look active: opening then fails raw
        with mapped(self.host.name, "cannot open a channel"):
            channel = self._new_channel(window)
            channel.exec_command(command)
            if first:
                channel.sendall(first)
        self.round_trips += 1
        return Channel(self.host.name, channel)

    def _new_channel(self, window: dict[str, int]) -> paramiko.Channel:
        """A new session channel. A connection found dead when a channel is opened (a
        network or bastion blip between two commands; seen once in the lab behind the
        bastion, cause unknown) is opened again, once: nothing has run on it yet, so
        this repeats nothing. A second failure is the caller's ConnectionLost."""
        seen: paramiko.Transport | None = None
        try:
            seen = self.transport
            return seen.open_session(**window)
        except (OSError, EOFError, paramiko.SSHException, ConnectionLost):
            if self.cancelled.is_set():
                raise
            with self._reconnecting:  # threads of one session: one of them reconnects
                now = self._conn.client.get_transport() if self._conn is not None else None
                if now is None or now is seen or not now.is_active():
                    self.close()
                    self.reconnects += 1
            return self.transport.open_session(**window)

    # -- become (sudo) ---------------------------------------------------
    @contextlib.contextmanager
    def elevated(self) -> Iterator[Session]:
        """Commands inside run as the become user (when the host has ansible_become)."""
        before, self.becoming = self.becoming, self.host.become is not None
        try:
            yield self
        finally:
            self.becoming = before

    def _sudo(self, command: str) -> tuple[str, bytes | None]:
        """(command, bytes to send first) for one command: through sudo when elevated.

        The password goes over the channel's stdin, which `sudo -S` reads (one line)
        before the command reads the rest: never in argv, the environment or a file."""
        become = self.host.become
        if not self.becoming or become is None:
            return command, None
        target = shell.quote(become.user)
        if self._sudo_asks is None:
            self.becoming = False
            try:
                probe = self.run(f"sudo -n -u {target} true", check=False)
            finally:
                self.becoming = True
            self._sudo_asks = probe.exit_status != 0
        inner = f"/bin/sh -c {shell.quote(command)}"
        if not self._sudo_asks:
            return f"sudo -n -u {target} -- {inner}", b""
        password = self.options.become_password
        if password is None:
            raise BecomeFailed(
                self.host.name,
                f"sudo needs a password for {self.host.user} (ansible_become): set "
                "XPUFLEET_BECOME_PASSWORD or answer the prompt (see "
                "docs/runbooks/provision.md#sudo-needs-a-password)",
            )
        # -k: always ask, so the password line is always consumed by sudo, never the command
        return f"sudo -k -S -p '' -u {target} -- {inner}", password.encode() + b"\n"

    def _check_sudo(self, status: int, stderr: str) -> None:
        if status != 0 and any(s in stderr for s in _SUDO_REFUSED):
            raise BecomeFailed(
                self.host.name,
                f"sudo refused {self.host.user} (ansible_become): {stderr_tail(stderr)} "
                "(see docs/runbooks/provision.md#sudo-needs-a-password)",
            )

    def follow(
        self, command: str, on_line: Callable[[bytes], None], cancelled: threading.Event
    ) -> None:
        """A long-running command's stdout (`tail -F`), line by line to `on_line`, until
        it ends or `cancelled` is set (the Slurm session follows the same way)."""
        buffer = b""

        def take(data: bytes) -> None:
            nonlocal buffer
            *complete, buffer = (buffer + data).split(b"\n")
            for line in complete:
                on_line(line)

        with self.channel(command) as channel:
            _drain(channel, None, take, cancelled)

    @contextlib.contextmanager
    def channel(
        self,
        command: str,
        *,
        lost: str = "connection lost",
        bulk: bool = False,
        elevate: bool = True,
    ) -> Iterator[paramiko.Channel]:
        """`open_channel` for one block: errors inside mapped (`lost`), closed at the end."""
        opened = self.open_channel(command, bulk=bulk, elevate=elevate)
        try:
            with mapped(self.host.name, lost):
                yield opened.raw
        finally:
            opened.close()

    def _exec(
        self,
        command: str,
        send: Callable[[paramiko.Channel], None],
        timeout: float | None,
        *,
        lost: str,
        bulk: bool = False,
        stdout_to: Callable[[bytes], None] | None = None,
    ) -> tuple[bytes, bytes, int | None]:
        """One channel per command: exec, `send` its stdin, drain."""
        # run/stream_to already put the command through sudo (with its password line)
        with self.channel(command, lost=lost, bulk=bulk, elevate=False) as channel:
            send(channel)
            channel.shutdown_write()
            drained = _drain(channel, timeout, stdout_to, self.cancelled)
        if drained is None:
            raise Interrupted(self.host.name, "interrupted: the command was abandoned")
        return drained


class Channel:
    """One command's channel with every SSH error mapped to ConnectionLost."""

    def __init__(self, host: str, channel: paramiko.Channel) -> None:
        self.host = host
        self._channel = channel

    @property
    def raw(self) -> paramiko.Channel:
        return self._channel

    def send(self, data: bytes) -> None:
        with mapped(self.host, "transfer cut off"):
            self._channel.sendall(data)

    def lines(self) -> Iterator[str]:
        """stdout line by line until the command ends (stderr kept for `stderr`)."""
        buffer = b""
        self.stderr = b""
        while True:
            with mapped(self.host, "connection lost"):
                if self._channel.recv_stderr_ready():
                    self.stderr += self._channel.recv_stderr(CHUNK)
                    continue
                block = self._channel.recv(CHUNK)
            if not block:
                break
            buffer += block
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                yield line.decode(errors="replace")
        while self._channel.recv_stderr_ready():
            self.stderr += self._channel.recv_stderr(CHUNK)

    def exit_status(self, timeout: float = 30.0) -> int | None:
        """The command's exit status (None: none within `timeout` or the link is gone)."""
        deadline = time.monotonic() + timeout
        while not self._channel.exit_status_ready():
            if time.monotonic() > deadline or self._channel.closed:
                return None if not self._channel.exit_status_ready() else self._status()
            time.sleep(0.05)
        return self._status()

    def _status(self) -> int:
        return int(self._channel.recv_exit_status())

    def close(self) -> None:
        close_quietly(self._channel)


#: what sudo prints when it did not accept the password (sudo's own messages)
_SUDO_REFUSED = (
    "Sorry, try again",
    "incorrect password attempt",
    "a password is required",
    "is not in the sudoers file",
    "may not run sudo",
)


def close_quietly(channel: paramiko.Channel) -> None:
    """Close a channel whose connection may already be gone (closing then fails raw)."""
    try:
        channel.close()
    except (OSError, EOFError, paramiko.SSHException):
        pass


def _drain(
    channel: paramiko.Channel,
    timeout: float | None,
    stdout_to: Callable[[bytes], None] | None = None,
    cancelled: threading.Event | None = None,
) -> tuple[bytes, bytes, int | None] | None:
    """Read stdout and stderr until the command exits; None status on timeout, None
    instead of a result once `cancelled` is set.

    With `stdout_to`, stdout goes there block by block and comes back empty.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    out: list[bytes] = []
    err: list[bytes] = []
    take_out = stdout_to or out.append
    while True:
        if cancelled is not None and cancelled.is_set():
            return None
        if channel.recv_ready():
            take_out(channel.recv(CHUNK))
            continue
        if channel.recv_stderr_ready():
            err.append(channel.recv_stderr(CHUNK))
            continue
        if channel.exit_status_ready() and not channel.recv_ready():
            if not channel.recv_stderr_ready():
                break
            continue
        if deadline is not None and time.monotonic() > deadline:
            return b"".join(out), b"".join(err), None
        if channel.closed and not channel.recv_ready() and not channel.recv_stderr_ready():
            break
        select.select([channel], [], [], 0.05)
    # flush whatever arrived together with the exit status
    while channel.recv_ready():
        take_out(channel.recv(CHUNK))
    while channel.recv_stderr_ready():
        err.append(channel.recv_stderr(CHUNK))
    return b"".join(out), b"".join(err), channel.recv_exit_status()


def scan_host_key(
    host: Host, timeout: float = 10.0, options: SSHOptions | None = None
) -> paramiko.PKey:
    """Fetch a host's public key without authenticating (for `invoke trust`).

    A host behind jump hosts is reached through them (their keys must be trusted)."""
    sock: socket.socket | paramiko.Channel
    try:
        if host.jump and options is not None:
            sock = options.hub.tunnel(host, options, timeout)
        else:
            sock = socket.create_connection((host.address, host.port), timeout=timeout)
    except Exception as exc:  # noqa: BLE001
        raise map_connect_error(host, exc) from exc
    try:
        return _scan(host, sock, timeout)
    finally:
        if host.jump and options is not None:
            options.hub.release(host, options)


def _scan(host: Host, sock: socket.socket | paramiko.Channel, timeout: float) -> paramiko.PKey:
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=timeout)
        return transport.get_remote_server_key()
    except Exception as exc:  # noqa: BLE001
        raise map_connect_error(host, exc) from exc
    finally:
        transport.close()


def known_hosts_for(host: Host, options: SSHOptions) -> Path:
    """The inventory's per-host `known_hosts` (already absolute) beats the setting."""
    return Path(host.var.known_hosts or options.known_hosts).expanduser()


def known_hosts_name(host: Host) -> str:
    """The name a host is filed under in known_hosts (OpenSSH's `[addr]:port` form)."""
    return host.address if host.port == 22 else f"[{host.address}]:{host.port}"

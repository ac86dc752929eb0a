"""Both connectors implement transport.Connector, and share one `run` (env quoted, stdin
as bytes, CommandFailed on a nonzero exit)."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

from xpufleet.errors import CommandFailed, ConnectionLost
from xpufleet.host import Host
from xpufleet.slurm import SlurmSession
from xpufleet.transport import Connector, Session, SSHOptions

OPTIONS = SSHOptions(known_hosts=Path("/nonexistent/known_hosts"))
HOST = Host("node1", "127.0.0.1", 22, vars={"connector": "slurm"})


def test_ssh_and_slurm_sessions_are_connectors() -> None:
    assert isinstance(Session(HOST, OPTIONS), Connector)
    assert isinstance(SlurmSession(HOST, OPTIONS), Connector)


def test_the_slurm_session_runs_through_the_shared_run(monkeypatch: pytest.MonkeyPatch) -> None:
    steps: list[tuple[str, bytes]] = []

    def step(self: SlurmSession, command: str, feed, timeout, stdout_to=None):  # noqa: ANN001
        sent: list[bytes] = []
        feed(sent.append)
        steps.append((command, b"".join(sent)))
        return "out", "err", 0 if "true" in command else 3

    monkeypatch.setattr(SlurmSession, "_step", step)
    session = SlurmSession(HOST, OPTIONS)
    result = session.run("true", stdin="data", env={"A": "x y"})
    assert (result.stdout, result.exit_status) == ("out", 0)
    assert steps[-1] == ("export A='x y'; true", b"data")
    with pytest.raises(CommandFailed) as err:
        session.run("false")
    assert err.value.exit_status == 3
    assert session.run("false", check=False).exit_status == 3


class _Transport:
    def __init__(self, dead: bool) -> None:
        self.dead = dead
        self.opened: list[str] = []

    def is_active(self) -> bool:
        return True  # a connection cut a moment ago may still look active

    def open_session(self, **window: object) -> object:
        if self.dead:
            raise EOFError  # what paramiko raises on a socket the far side closed
        channel = types.SimpleNamespace(exec_command=self.opened.append, sendall=None)
        return channel


class _Reconnecting(Session):
    """A session whose first connection is already dead; later ones work."""

    def open(self) -> Session:
        if self._conn is None:
            transport = _Transport(dead=not self.transports)
            self.transports.append(transport)
            client = types.SimpleNamespace(get_transport=lambda: transport)
            self._conn = types.SimpleNamespace(client=client, close=lambda: None)  # type: ignore[assignment]
        return self


def test_a_connection_found_dead_between_commands_is_opened_again_once() -> None:
    session = _Reconnecting(HOST, OPTIONS)
    session.transports = []  # type: ignore[attr-defined]
    session.open_channel("true", elevate=False)
    first, second = session.transports  # type: ignore[attr-defined]
    assert (first.opened, second.opened) == ([], ["true"]) and session.reconnects == 1
    # nothing ran on the dead one; the next command uses the new connection, no reconnect
    session.open_channel("date", elevate=False)
    assert second.opened == ["true", "date"] and session.reconnects == 1


def test_a_second_dead_connection_is_the_callers_connection_lost() -> None:
    with pytest.raises(ConnectionLost, match="cannot open a channel"):
        _DeadAlways(HOST, OPTIONS).open_channel("true", elevate=False)


class _DeadAlways(Session):
    def open(self) -> Session:
        if self._conn is None:
            transport = _Transport(dead=True)
            client = types.SimpleNamespace(get_transport=lambda: transport)
            self._conn = types.SimpleNamespace(client=client, close=lambda: None)  # type: ignore[assignment]
        return self

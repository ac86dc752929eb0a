"""Both connectors implement transport.Connector, and share one `run` (env quoted, stdin
as bytes, CommandFailed on a nonzero exit)."""

from __future__ import annotations

from pathlib import Path

import pytest

from xpufleet.errors import CommandFailed
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

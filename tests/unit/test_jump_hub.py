"""The jump hub's shared bastion connections are counted: the last session that lets go
closes one. A connection that died is opened anew for the next session, and the
sessions that held the dead one must not close the new one when they let go."""

from __future__ import annotations

from pathlib import Path

from xpufleet.host import Host
from xpufleet.jump import JumpHub
from xpufleet.transport import SSHOptions

OPTIONS = SSHOptions(known_hosts=Path("/nonexistent/known_hosts"))
HOPS = [Host("bastion", "127.0.0.9", 22)]


class _Transport:
    def __init__(self) -> None:
        self.active = True

    def is_active(self) -> bool:
        return self.active


class _Client:
    def __init__(self) -> None:
        self.transport = _Transport()
        self.closed = False

    def get_transport(self) -> _Transport:
        return self.transport

    def close(self) -> None:
        self.closed = True
        self.transport.active = False


def _hub() -> tuple[JumpHub, list[_Client]]:
    hub = JumpHub()
    made: list[_Client] = []

    def connect(hop: Host, parent: object, timeout: float) -> _Client:
        made.append(_Client())
        return made[-1]

    hub._connect = connect  # type: ignore[method-assign,assignment]
    return hub, made


def test_the_last_session_to_let_go_closes_the_bastion_connection() -> None:
    hub, made = _hub()
    hub._acquire(HOPS, "node1", OPTIONS, 5)
    hub._acquire(HOPS, "node2", OPTIONS, 5)
    assert len(made) == 1  # one connection for both nodes
    hub._release_chain(HOPS)
    assert not made[0].closed
    hub._release_chain(HOPS)
    assert made[0].closed


def test_a_dead_connection_replaced_is_not_closed_by_the_old_sessions() -> None:
    hub, made = _hub()
    hub._acquire(HOPS, "node1", OPTIONS, 5)  # session A
    hub._acquire(HOPS, "node2", OPTIONS, 5)  # session B
    made[0].transport.active = False  # the bastion connection dies under both
    hub._release_chain(HOPS)  # A lets go of the dead one ...
    hub._acquire(HOPS, "node1", OPTIONS, 5)  # ... and reconnects: a new connection
    assert len(made) == 2 and made[0].closed and not made[1].closed
    hub._release_chain(HOPS)  # B, done with the dead connection, lets go
    assert not made[1].closed  # A still uses the new one
    hub._release_chain(HOPS)  # A done
    assert made[1].closed

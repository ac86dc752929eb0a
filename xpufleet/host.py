"""A resolved inventory host: connection facts plus its merged variables."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .variables import HostVars


@dataclass(frozen=True)
class Hop:
    """One jump host (ProxyJump) on the way to a node; None fields take the node's."""

    address: str
    port: int | None = None
    user: str | None = None
    key_file: str | None = None
    known_hosts: str | None = None

    def label(self, default_user: str = "") -> str:
        user = self.user or default_user
        return f"{user + '@' if user else ''}{self.address}:{self.port or 22}"


@dataclass(frozen=True)
class Become:
    """Privilege escalation as Ansible's `ansible_become*` ask for it (sudo only)."""

    user: str = "root"
    method: str = "sudo"


@dataclass(frozen=True)
class Host:
    """One node as the inventory resolves it (Ansible precedence already applied)."""

    name: str
    address: str
    port: int = 22
    user: str = "root"
    key_file: str | None = None
    groups: tuple[str, ...] = ()
    vars: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    #: jump hosts, outermost first (the control node connects to jump[0] directly)
    jump: tuple[Hop, ...] = ()
    #: seconds to wait for the TCP connection and handshake (None: the setting)
    connect_timeout: float | None = None
    #: connection settings the inventory left unset, which ssh_config may fill
    unset: frozenset[str] = frozenset()
    #: run privileged steps through sudo (None: the login user does everything)
    become: Become | None = None
    #: where each variable was written, (file, line): planning errors name it
    var_sources: dict[str, tuple[str, int | None]] = field(
        default_factory=dict, hash=False, compare=False
    )

    @functools.cached_property
    def var(self) -> HostVars:
        """The variables resolved once and typed (`vars` holds them as the inventory wrote
        them): registry < roles' defaults < inventory, Jinja rendered (variables.resolve)."""
        from .variables import resolve

        return resolve(self)

    @property
    def login(self) -> str:
        """`user@address:port`, how messages name the connection."""
        return f"{self.user}@{self.address}:{self.port}"

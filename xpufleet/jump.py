"""Jump hosts (ProxyJump): one SSH connection per bastion, shared by every node behind it.

A node behind `bastion` is reached through a `direct-tcpip` channel of the bastion's
connection, so a fan-out over N nodes costs one extra handshake, not N. A chain
(`-J a,b`) is a connection to `a`, one to `b` through a channel of `a`, then the node
through a channel of `b`; each link is shared by every chain that starts with it.
Host keys are verified at every link against known_hosts (the hop's own file, else
the node's). Connections are counted: the last session that releases a link closes
it, so nothing is left open. A link that failed is not retried within the task.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

import paramiko

from .errors import HostError, UnreachableError
from .host import Hop, Host

if TYPE_CHECKING:
    from .transport import SSHOptions

Chain = tuple[tuple[str, int, str], ...]


def hop_host(node: Host, hop: Hop, options: SSHOptions) -> Host:
    """A jump host as a Host (for connecting, trusting and error messages)."""
    known = hop.known_hosts or str(node.vars.get("known_hosts") or options.known_hosts)
    return Host(
        name=node.name,
        address=hop.address,
        port=hop.port or 22,
        user=hop.user or node.user,
        key_file=hop.key_file or node.key_file or options.key_file,
        vars={"known_hosts": known},
    )


def chain_of(node: Host, options: SSHOptions) -> list[Host]:
    """The node's jump hosts as Hosts, outermost first."""
    return [hop_host(node, hop, options) for hop in node.jump]


def _key(hosts: list[Host]) -> Chain:
    return tuple((h.address, h.port, h.user) for h in hosts)


def via(error: HostError, hop: Host, node: str) -> UnreachableError:
    """An error reaching a jump host, told as the node's: the node is what is unreachable."""
    kind = type(error) if isinstance(error, UnreachableError) else UnreachableError
    return kind(node, f"via jump host {hop.login}: {error.message}")


def open_tunnel(
    transport: paramiko.Transport, address: str, port: int, node: str, timeout: float
) -> paramiko.Channel:
    """A direct-tcpip channel to address:port from the far side of `transport`."""
    try:
        return transport.open_channel(
            "direct-tcpip", (address, port), ("127.0.0.1", 0), timeout=timeout
        )
    except paramiko.ChannelException as exc:
        reason = exc.text or f"code {exc.code}"
        raise UnreachableError(
            node, f"cannot connect to {address}:{port} from the jump host: {reason}"
        ) from exc
    except (OSError, EOFError, paramiko.SSHException) as exc:
        raise UnreachableError(node, f"jump host connection failed: {exc}") from exc


class _Link:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.client: paramiko.SSHClient | None = None
        self.error: UnreachableError | None = None
        self.users = 0


class JumpHub:
    """The task's bastion connections, opened on first use and shared by every session."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._links: dict[Chain, _Link] = {}
        #: handshakes made with jump hosts (for tests and benchmarks: one per bastion)
        self.handshakes = 0

    def tunnel(self, node: Host, options: SSHOptions, timeout: float) -> paramiko.Channel:
        """A channel to the node's sshd through its jump hosts (call release() after)."""
        hops = chain_of(node, options)
        transport = self._acquire(hops, node.name, options, timeout)
        try:
            return open_tunnel(transport, node.address, node.port, node.name, timeout)
        except BaseException:
            self.release(node, options)
            raise

    def release(self, node: Host, options: SSHOptions) -> None:
        """One session behind this chain is done; the last one closes the links."""
        self._release_chain(chain_of(node, options))

    def close(self) -> None:
        with self._lock:
            links = list(self._links.values())
            self._links.clear()
        for link in links:
            if link.client is not None:
                link.client.close()

    def _acquire(
        self, hops: list[Host], node: str, options: SSHOptions, timeout: float
    ) -> paramiko.Transport:
        """The transport to the last hop, every link on the way counted once more."""
        transport: paramiko.Transport | None = None
        taken: list[Host] = []
        try:
            for depth in range(1, len(hops) + 1):
                transport = self._link(hops[:depth], transport, node, options, timeout)
                taken = hops[:depth]
        except BaseException:
            if taken:
                self._release_chain(taken)
            raise
        assert transport is not None
        return transport

    def _release_chain(self, hops: list[Host]) -> None:
        for depth in range(len(hops), 0, -1):
            key = _key(hops[:depth])
            with self._lock:
                link = self._links.get(key)
            if link is None:
                continue
            # the link's lock first, as in _link: a session taking the link right now
            # either counts before this release or finds it closed and opens it anew
            with link.lock, self._lock:
                if link.client is None or self._links.get(key) is not link:
                    continue
                link.users -= 1
                if link.users > 0:
                    continue
                client, link.client = link.client, None
                del self._links[key]
            client.close()

    def _link(
        self,
        hops: list[Host],
        parent: paramiko.Transport | None,
        node: str,
        options: SSHOptions,
        timeout: float,
    ) -> paramiko.Transport:
        key = _key(hops)
        with self._lock:
            link = self._links.setdefault(key, _Link())
        with link.lock:
            if link.error is not None:
                raise type(link.error)(node, link.error.message)
            transport = link.client.get_transport() if link.client else None
            if link.client is None or transport is None or not transport.is_active():
                if link.client is not None:
                    link.client.close()  # dead: its sessions are gone with it
                try:
                    link.client = self._connect(hops[-1], parent, timeout)
                except HostError as exc:
                    link.error = via(exc, hops[-1], node)
                    raise type(link.error)(node, link.error.message) from exc
                # the count is kept: the sessions of the dead connection still release
                # theirs, and a reset would let them close this one under its new users
            with self._lock:
                link.users += 1
                self._links[key] = link
            transport = link.client.get_transport()
            assert transport is not None
            return transport

    def _connect(
        self, hop: Host, parent: paramiko.Transport | None, timeout: float
    ) -> paramiko.SSHClient:
        from .transport import map_connect_error  # one mapping of connect errors

        sock = None
        if parent is not None:
            sock = open_tunnel(parent, hop.address, hop.port, hop.name, timeout)
        client = paramiko.SSHClient()
        known = Path(str(hop.vars["known_hosts"])).expanduser()
        if known.exists():
            client.load_host_keys(str(known))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(
                hop.address,
                port=hop.port,
                username=hop.user,
                key_filename=[hop.key_file] if hop.key_file else None,
                look_for_keys=False,
                allow_agent=False,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
                sock=sock,
            )
        except (TimeoutError, Exception) as exc:  # noqa: BLE001 - mapped right here
            client.close()
            raise map_connect_error(hop, exc) from exc
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(30)
        with self._lock:
            self.handshakes += 1
        return client

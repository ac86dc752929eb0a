"""Network area: the inventory's nic and its addresses (split networks), what the
hostname resolves to, and libfabric's providers for the configured fi_provider."""

import ipaddress

from ..facts.kernel import FAST_PROVIDERS
from ..facts.node import NodeFacts
from . import FAIL, PASS, SKIP, WARN, Verdict, node_check, verdict
from .expect import Expect


def _node_addresses(facts: NodeFacts, expect: Expect) -> list[str]:
    """The node's inventory address as IPs (resolved by the node if it is a name)."""
    try:
        ipaddress.ip_address(expect.address)
        return [expect.address]
    except ValueError:
        return list(facts.resolve.address or [])


def _rendezvous_ip(facts: NodeFacts, expect: Expect) -> str | None:
    """The rendezvous address as an IP (a name is resolved like the node's own address
    only when it is the node's address)."""
    address = expect.rendezvous_address
    if not address:
        return None
    try:
        return str(ipaddress.ip_address(address.strip("[]")))
    except ValueError:
        if address == expect.address and facts.resolve.address:
            return str(facts.resolve.address[0])
        return None


@node_check(
    "net.nic",
    "the inventory's nic exists and carries the rendezvous address (node 0) or an address "
    "in its subnet",
)
def check_nic(facts: NodeFacts, expect: Expect) -> Verdict:
    """Split networks: SSH may run on a management network (`ansible_host`) while ranks
    meet on `nic` at `rendezvous_address`. Node 0's nic must carry that address; every
    other node's nic an address in its subnet (the interface it reaches node 0 on)."""
    if not expect.nic:
        return verdict(
            WARN,
            "found no `nic` in the inventory, expected the interface for rendezvous and "
            "collectives (GLOO_SOCKET_IFNAME, CCL_KVS_IFACE, FI_TCP_IFACE)",
        )
    nic = facts.nic
    rendezvous = _rendezvous_ip(facts, expect)
    is_node0 = expect.node0 in (None, expect.host)
    if rendezvous is None:
        targets = _node_addresses(facts, expect)
        wanted = f"expected {expect.nic} to carry {', '.join(targets) or expect.address}"
    elif is_node0:
        targets = [rendezvous]
        wanted = f"expected {expect.nic} to carry the rendezvous address {rendezvous}"
    else:
        targets = []
        wanted = (
            f"expected {expect.nic} to carry an address in the subnet of the rendezvous "
            f"address {rendezvous} (node 0 {expect.node0})"
        )
    if nic is None or not nic.exists:
        return verdict(FAIL, f"found no interface {expect.nic}, {wanted}")
    # lo answers for all of 127/8 (the lab's SSH addresses are not assigned to it); an
    # explicit rendezvous_address elsewhere must be carried by the nic itself
    loopback = nic.name == "lo" and expect.rendezvous_address in (None, expect.address)
    shown = ", ".join(f"{i.address}/{i.prefix}" for i in nic.addresses) or "no address"
    if targets:
        ok = any(i.carries(a, loopback_interface=loopback) for a in targets for i in nic.addresses)
    else:
        assert rendezvous is not None
        ok = any(i.same_subnet(rendezvous) for i in nic.addresses)
    return verdict(PASS if ok else FAIL, f"found {nic.name} with {shown}, {wanted}")


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


@node_check("net.hostname", "the hostname resolves to the node's address")
def check_hostname(facts: NodeFacts, expect: Expect) -> Verdict:
    """gloo/oneCCL pick the address the hostname resolves to (REFERENCE §6)."""
    name = facts.hostname or "?"
    if facts.resolve.hostname_addresses is None:
        return verdict(SKIP, f"hostname {name}: not resolved (probe ran in sh)")
    own = set(_node_addresses(facts, expect))
    nic_addresses = {i.address for i in facts.nic.addresses} if facts.nic else set()
    resolved = facts.resolve.hostname_addresses
    wanted = f"expected {', '.join(sorted(own)) or expect.address} (the node's address)"
    if not resolved:
        return verdict(
            WARN,
            f"hostname {name} does not resolve "
            f"({facts.resolve.hostname_error or 'no address'}), {wanted}",
        )
    shown = ", ".join(resolved)
    if own & set(resolved):
        return verdict(PASS, f"hostname {name} resolves to {shown}, {wanted}")
    foreign_loopback = [a for a in resolved if _is_loopback(a) and a not in own]
    if foreign_loopback:
        return verdict(
            FAIL,
            f"hostname {name} resolves to {shown} (loopback, not this node's address), {wanted}",
        )
    if set(resolved) & nic_addresses:
        return verdict(PASS, f"hostname {name} resolves to {shown} on {expect.nic}, {wanted}")
    return verdict(
        WARN,
        f"hostname {name} resolves to {shown}, not an address of {expect.nic or 'the nic'}, "
        f"{wanted}",
    )


@node_check("net.fabric", "libfabric providers and the configured fi_provider", reads=("fi_info",))
def check_fabric(facts: NodeFacts, expect: Expect) -> Verdict:
    fabric = facts.fabric
    provider = expect.fi_provider
    if fabric is None or fabric.tool is None:
        return verdict(
            SKIP,
            f"found no fi_info on the node (PATH, oneAPI mpi/ccl libfabric), cannot list the "
            f"providers for fi_provider {provider}",
        )
    if fabric.error:
        return verdict(WARN, f"fi_info -l failed: {fabric.error}")
    shown = ", ".join(fabric.providers) or "none"
    listed = [p.split(";")[0] for p in fabric.providers]
    if provider.split(";")[0] not in listed:
        return verdict(
            FAIL,
            f"found providers {shown}, expected fi_provider {provider} among them",
            providers=list(fabric.providers),
        )
    faster = [p for p in FAST_PROVIDERS if p in listed]
    if provider == "tcp" and faster:
        return verdict(
            WARN,
            f"found providers {shown}: fi_provider is tcp but {', '.join(faster)} is available "
            "(faster; tcp works but is slow)",
            providers=list(fabric.providers),
        )
    return verdict(
        PASS,
        f"found providers {shown}, expected fi_provider {provider} among them",
        providers=list(fabric.providers),
    )

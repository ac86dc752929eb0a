"""net.nic on a split network: SSH on a management address (ansible_host), ranks on
`nic` at node 0's `rendezvous_address`."""

from __future__ import annotations

import json

from doctor_samples import facts, patched

from xpufleet.checks.expect import Expect
from xpufleet.checks.network import check_nic
from xpufleet.host import Host

NODE0 = Host("node1", "192.168.0.1", vars={"nic": "hsn0", "rendezvous_address": "10.10.0.1"})


def nic(name: str, *addresses: str) -> dict:
    info = [{"family": "inet", "local": a.split("/")[0], "prefixlen": int(a.split("/")[1])}
            for a in addresses]  # fmt: skip
    return {
        "name": name,
        "exists": True,
        "ip_json": json.dumps([{"ifname": name, "addr_info": info}]),
    }


def verdict(host: Host, *addresses: str, name: str = "hsn0") -> tuple[str, str]:
    got = check_nic(facts(patched(nic=nic(name, *addresses))), Expect.from_host(host, NODE0))
    return got.status, got.message


def test_node0_nic_must_carry_the_rendezvous_address_not_the_ssh_one() -> None:
    assert verdict(NODE0, "10.10.0.1/16")[0] == "pass"
    status, message = verdict(NODE0, "192.168.0.1/24", name="eth0")
    assert status == "fail" and "rendezvous address 10.10.0.1" in message


def test_other_nodes_nic_must_be_in_the_rendezvous_subnet() -> None:
    other = Host("node2", "192.168.0.2", vars={"nic": "hsn0"})
    assert verdict(other, "10.10.0.2/16")[0] == "pass"
    status, message = verdict(other, "192.168.0.2/24", name="eth0")
    assert status == "fail" and "subnet of the rendezvous address 10.10.0.1" in message
    # a /32 elsewhere does not reach node 0 without a route: not in its subnet
    assert verdict(other, "10.10.0.2/32")[0] == "fail"


def test_without_rendezvous_address_node0_nic_carries_its_ssh_address() -> None:
    plain0 = Host("node1", "10.0.0.1", vars={"nic": "eth0"})
    got = check_nic(facts(), Expect.from_host(plain0, plain0))
    assert got.status == "pass" and "10.0.0.1" in got.message

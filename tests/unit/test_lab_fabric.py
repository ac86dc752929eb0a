"""The lab's split network: fabric addresses and NIC names derive from the lab's net, so
two labs never share one, and interface names fit the kernel's 15 characters."""

from __future__ import annotations

import pytest
import yaml

from xpufleet.errors import InputError
from xpufleet.lab import Lab
from xpufleet.lab.cluster import default_inventory


def test_fabric_derives_from_the_labs_net() -> None:
    default, other = Lab(".lab", "127.0.1", 22022), Lab(".lab-b", "127.0.22", 22222)
    assert default.fabric_address(3) == "127.192.1.3"
    assert other.fabric_address(3) == "127.192.22.3"
    assert default.fabric_nic(3) == "hsn0-1-3" and other.fabric_nic(3) == "hsn0-22-3"
    labs = [Lab(".l", f"127.{x}.{y}", 22022) for x in (0, 5, 63) for y in (1, 22, 255)]
    assert len({lab.fabric_net for lab in labs}) == len(labs)
    # neither another lab's net nor the bastion's private net (127.(X+128).Y)
    private = {f"127.{x + 128}.{y}" for x in range(64) for y in range(256)}
    assert not {lab.fabric_net for lab in labs} & ({lab.net for lab in labs} | private)
    assert len(Lab(".l", "127.63.255", 1).fabric_nic(254)) <= 15


def test_lab_inventory_is_a_split_network() -> None:
    hosts = yaml.safe_load(default_inventory())["all"]["children"]["gpu_nodes"]["hosts"]
    for i in range(1, 5):
        host = hosts[f"node{i}"]
        assert host["ansible_host"] == f"127.0.1.{i}"  # SSH: management address
        assert host["nic"] == f"hsn0-1-{i}"  # ranks: the fabric NIC
        assert host["rendezvous_address"] == f"127.192.1.{i}"


def test_launch_ports_are_the_labs_own() -> None:
    """Labs share one network namespace and torch's TCPStore listens on every address:
    each lab's inventory carries launch ports of its own, none another lab's (SSH, Slurm
    or launch), all below the ephemeral range."""
    from xpufleet.lab.slurm import SlurmLayout

    top = yaml.safe_load(default_inventory())["all"]["vars"]
    assert (top["rendezvous_port"], top["sglang_port"], top["supervisor_port"]) == (
        29022,
        30022,
        31022,
    )
    labs = [Lab(".l", f"127.0.{n}", 22022 + 100 * n) for n in range(8)]
    labs += [Lab(".l", "127.1.1", 22023), Lab(".l", "127.1.2", 23021)]
    launch = [set(lab.launch_ports().values()) for lab in labs]
    for i, ports in enumerate(launch):
        assert len(ports) == 3 and max(ports) < 32768
        others = set().union(*(p for j, p in enumerate(launch) if j != i))
        assert not ports & others
        layout = SlurmLayout(labs[i].dir, labs[i].net, labs[i].port)
        slurm = {layout.controller_port} | {layout.node_port(k) for k in range(1, 33)}
        assert not ports & ({lab.port for lab in labs} | slurm)


def test_a_lab_port_without_room_for_its_launch_ports_is_refused() -> None:
    Lab(".l", "127.0.1", 65535 - 9000).validate()
    with pytest.raises(InputError) as caught:
        Lab(".l", "127.0.1", 65535 - 8999).validate()
    assert caught.value.key == "port" and "7000" in caught.value.message

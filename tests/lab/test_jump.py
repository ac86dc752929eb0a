"""Reaching nodes the control node cannot reach directly: the lab's bastion.

The lab's compute nodes also listen on private addresses that a firewall rule keeps
from everyone but sessions of the lab's accounts on the bastion (see
xpufleet/lab/bastion.py). These tests go through real sshd jump hosts with real
direct-tcpip forwarding; nothing is mocked.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from xpufleet.errors import ConnectionRefused, HostKeyChanged, HostKeyUnknown
from xpufleet.executor import fan_out
from xpufleet.host import Hop
from xpufleet.inventory import load_inventory
from xpufleet.lab import Lab, bastion
from xpufleet.transport import Session

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def login(lab: Lab) -> bastion.Accounts:
    return lab.bastion_up()


def _inventory(lab: Lab, tmp_path: Path, **kwargs: object) -> Path:
    path = tmp_path / "inventory.yaml"
    path.write_text(bastion.inventory(lab, **kwargs))  # type: ignore[arg-type]
    return path


def _invoke(invoke_bin: str, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = subprocess.run(
        [invoke_bin, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )
    return proc.returncode, proc.stdout, proc.stderr


def test_one_bastion_connection_carries_every_node(
    lab: Lab, login: bastion.Accounts, tmp_path: Path
) -> None:
    hosts = list(load_inventory(_inventory(lab, tmp_path, user=login.ops)).hosts.values())
    options = lab.ssh_options()
    outcomes = fan_out(hosts, lambda s: s.run("hostname; id -un").stdout.split(), options)
    assert {n: o.value for n, o in outcomes.items()} == {h.name: [h.name, login.ops] for h in hosts}
    assert options.hub.handshakes == 1  # one handshake with the bastion for all four
    assert options.hub._links == {}  # and it was closed with the last session
    # the firewall is real: straight to a private address is refused
    with pytest.raises(ConnectionRefused):
        Session(dataclasses.replace(hosts[0], jump=()), options).open()


def test_two_hops(lab: Lab, login: bastion.Accounts, tmp_path: Path) -> None:
    outer = f"{login.usr}@{bastion.bastion_address(lab)}:{lab.port}"
    inner = f"{login.usr}@{lab.private_address(1)}:{lab.port}"
    path = _inventory(lab, tmp_path, user="root", jump=f"{outer},{inner}")
    node2 = load_inventory(path).hosts["node2"]
    assert len(node2.jump) == 2
    options = lab.ssh_options()
    with Session(node2, options) as session:
        assert session.run("hostname").stdout.strip() == "node2"
    assert options.hub.handshakes == 2


def test_host_keys_of_the_bastion_are_verified(
    lab: Lab, login: bastion.Accounts, tmp_path: Path
) -> None:
    node = load_inventory(_inventory(lab, tmp_path, user=login.ops)).hosts["node1"]
    lines = lab.known_hosts.read_text().splitlines()
    address = f"[{bastion.bastion_address(lab)}]:{lab.port}"
    without = tmp_path / "known_hosts.nobastion"
    without.write_text("\n".join(ln for ln in lines if not ln.startswith(address)) + "\n")
    hop = dataclasses.replace(node.jump[0], known_hosts=str(without))
    with pytest.raises(HostKeyUnknown, match="via jump host .*invoke trust"):
        Session(dataclasses.replace(node, jump=(hop,)), lab.ssh_options()).open()
    # a node key that differs (the bastion's, filed under node1's name) is refused too
    bastion_key = next(ln for ln in lines if ln.startswith(address)).split(None, 1)[1]
    wrong = tmp_path / "known_hosts.wrong"
    wrong.write_text(
        "\n".join(ln for ln in lines if not ln.startswith(f"[{node.address}]"))
        + f"\n[{node.address}]:{lab.port} {bastion_key}\n"
    )
    changed = dataclasses.replace(node, vars={**node.vars, "known_hosts": str(wrong)})
    hop = dataclasses.replace(node.jump[0], known_hosts=str(lab.known_hosts))
    with pytest.raises(HostKeyChanged):
        Session(dataclasses.replace(changed, jump=(hop,)), lab.ssh_options()).open()


def test_trust_then_run_through_the_bastion_with_ssh_config_aliases(
    lab: Lab, login: bastion.Accounts, tmp_path: Path, invoke_bin: str
) -> None:
    """An operator's ssh_config names the bastion and the nodes; the inventory only
    aliases. `invoke trust` records the bastion's key, then the nodes' through it."""
    known = tmp_path / "known_hosts"
    config = tmp_path / "ssh_config"
    net = bastion.private_net(lab.net)
    config.write_text(
        textwrap.dedent(
            f"""
            Host login
              HostName {bastion.bastion_address(lab)}
              User {login.usr}
              Port {lab.port}
            Host gpu*
              ProxyJump login
              User {login.ops}
              Port {lab.port}
              IdentityFile {lab.key_file}
              UserKnownHostsFile {known}
            Host gpu1
              HostName {net}.1
            Host gpu2
              HostName {net}.2
            """
        )
    )
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("all:\n  hosts:\n    gpu1: {}\n    gpu2: {ansible_user: root}\n")
    env = {"XPUFLEET_SSH_CONFIG": str(config)}
    code, out, err = _invoke(
        invoke_bin, "trust", "--yes", "--json", "--hosts", str(inventory), env=env
    )
    assert code == 0, err
    hosts = json.loads(out)["hosts"]
    assert set(hosts) == {f"jump {login.usr}@{bastion.bastion_address(lab)}:{lab.port}",
                          "gpu1", "gpu2"}  # fmt: skip
    assert len(known.read_text().splitlines()) == 3
    code, out, err = _invoke(
        invoke_bin, "run", "id -un; hostname", "--json", "--hosts", str(inventory), env=env
    )
    assert code == 0, err
    ran = {n: h["results"][0]["message"] for n, h in json.loads(out)["hosts"].items()}
    assert ran == {"gpu1": f"{login.ops}\nnode1", "gpu2": "root\nnode2"}  # inventory wins


def test_insecure_ansible_arguments_are_refused_before_any_host(
    lab: Lab, tmp_path: Path, invoke_bin: str
) -> None:
    text = lab.inventory_path.read_text().replace(
        "ansible_ssh_common_args: -F none",
        "ansible_ssh_common_args: -F none -o StrictHostKeyChecking=no",
    )
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(text)
    code, _out, err = _invoke(invoke_bin, "run", "touch /tmp/xpf-must-not-exist", "--hosts",
                              str(inventory))  # fmt: skip
    assert code == 2
    assert "ansible_ssh_common_args" in err and "invoke trust" in err
    assert str(inventory) in err


def test_hop_without_route_names_the_node(lab: Lab, login: bastion.Accounts) -> None:
    """A node the bastion cannot reach fails alone, named, as unreachable."""
    host = dataclasses.replace(
        lab.hosts(1)[0],
        address=f"{bastion.private_net(lab.net)}.250",
        jump=(Hop(bastion.bastion_address(lab), lab.port, login.usr),),
    )
    outcomes = fan_out([host, *lab.hosts(2)[1:]], lambda s: "ok", lab.ssh_options())
    assert outcomes["node1"].error is not None and not outcomes["node1"].reachable
    assert "node1" in str(outcomes["node1"].error)
    assert outcomes["node2"].value == "ok"

"""Reaching real clusters, the pure parts: Ansible's ssh arguments, ProxyJump specs,
ssh_config applied under inventory values, address checks and become variables.

No test here reads the real ~/.ssh: every ssh_config is a file written in tmp_path.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from xpufleet import sshconfig
from xpufleet.errors import EXIT_BAD_INPUT, InputError, InventoryError
from xpufleet.host import Become, Hop
from xpufleet.inventory import load_inventory
from xpufleet.sshargs import ArgsError, check_address, parse_jump, parse_ssh_args


def write_inventory(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "inventory.yaml"
    path.write_text(textwrap.dedent(text))
    return path


# -- ssh arguments ------------------------------------------------------------------------


def test_honoured_options_in_both_spellings() -> None:
    args = parse_ssh_args(
        "-o UserKnownHostsFile=kh -oIdentityFile='~/k' -o 'Port 2200' -l ops "
        "-J jump@bastion:2222,inner -o ConnectTimeout=7 -F none"
    )
    assert args.known_hosts == "kh"
    assert args.identity_file == "~/k"
    assert args.port == 2200
    assert args.user == "ops"
    assert args.proxy_jump == "jump@bastion:2222,inner"
    assert args.connect_timeout == 7.0
    assert args.config_file == "none"
    assert args.unsupported == []


def test_first_value_wins_as_in_ssh() -> None:
    args = parse_ssh_args("-o User=first -o User=second -p 1 -o Port=2")
    assert (args.user, args.port) == ("first", 1)


@pytest.mark.parametrize(
    "words",
    [
        "-o StrictHostKeyChecking=no",
        "-o StrictHostKeyChecking=off",
        "-o UserKnownHostsFile=/dev/null",
        "-o 'UserKnownHostsFile /dev/null'",
    ],
)
def test_insecure_options_are_refused(words: str) -> None:
    with pytest.raises(ArgsError, match="invoke trust"):
        parse_ssh_args(words)


def test_unsupported_options_are_named_not_dropped() -> None:
    args = parse_ssh_args(
        "-C -o ControlMaster=auto -o ProxyCommand='ssh -W %h:%p b' -o StrictHostKeyChecking=yes"
    )
    assert args.unsupported[0] == "-C"
    assert "ControlMaster=auto" in args.unsupported
    assert any("ProxyJump" in u for u in args.unsupported)  # tells what to write instead
    assert len(args.unsupported) == 3  # StrictHostKeyChecking=yes is what we do anyway


@pytest.mark.parametrize("words", ["-o", "bastion", "-o Port=99999", "-J 'a b'", "-o 'x"])
def test_malformed_arguments_are_refused(words: str) -> None:
    with pytest.raises(ArgsError):
        parse_ssh_args(words)


def test_jump_specs() -> None:
    assert parse_jump("ops@10.0.0.1:2222,login2") == (
        Hop("10.0.0.1", 2222, "ops"),
        Hop("login2", None, None),
    )
    assert parse_jump("ssh://u@[fe80::1]:22") == (Hop("fe80::1", 22, "u"),)
    assert parse_jump("none") == ()
    for bad in ("a;b", "u@h:0", "$(x)@h"):
        with pytest.raises(ArgsError):
            parse_jump(bad)


@pytest.mark.parametrize(
    "value", ["127.0.1.1\ntouch x", "node 1", "a;b", "$(reboot)", "`id`", "a|b", ""]
)
def test_addresses_refuse_shell_characters(value: str) -> None:
    assert check_address(value) is not None


@pytest.mark.parametrize("value", ["10.0.0.1", "fe80::1%eth0", "node-1.cluster.local", "n_1"])
def test_addresses_accept_names_and_ips(value: str) -> None:
    assert check_address(value) is None


# -- the inventory ------------------------------------------------------------------------


def test_inventory_uses_ansible_ssh_args(tmp_path: Path) -> None:
    path = write_inventory(
        tmp_path,
        """
        all:
          vars:
            ansible_ssh_common_args: >-
              -o UserKnownHostsFile=keys/known_hosts -o StrictHostKeyChecking=yes
              -o ProxyJump=jump@login:2222 -o ConnectTimeout=5 -o User=fromargs
          hosts:
            n1: {ansible_host: 10.0.0.1}
            n2: {ansible_host: 10.0.0.2, ansible_user: ops,
                 ansible_ssh_extra_args: "-p 2201 -i extra_key -o ControlPersist=60s"}
        """,
    )
    inv = load_inventory(path)
    n1, n2 = inv.hosts["n1"], inv.hosts["n2"]
    assert n1.vars["known_hosts"] == str(tmp_path / "keys" / "known_hosts")
    assert n1.jump == (Hop("login", 2222, "jump"),)
    assert n1.connect_timeout == 5.0
    assert n1.user == "fromargs"
    assert n2.user == "ops"  # ansible_user beats -o User, as on Ansible's ssh command line
    assert n2.port == 2201 and n2.key_file == str(tmp_path / "extra_key")
    assert "user" not in n1.unset and "port" in n1.unset  # ssh_config may fill the port
    assert len(inv.warnings) == 1
    assert "ansible_ssh_extra_args" in inv.warnings[0]
    assert "ControlPersist=60s" in inv.warnings[0]
    assert "inventory.yaml:10" in inv.warnings[0]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("ansible_ssh_common_args: -o StrictHostKeyChecking=no", "invoke trust"),
        ("ansible_ssh_extra_args: '-o UserKnownHostsFile=/dev/null'", "invoke trust"),
        ('ansible_host: "10.0.0.1\\ntouch x"', "not an address"),
        ('rendezvous_address: "127.0.1.1\\ntouch x"', "not an address"),
        ("ansible_become_method: su", "sudo only"),
        ("ansible_become: maybe", "true or false"),
        ("ansible_become_password: hunter2", "XPUFLEET_BECOME_PASSWORD"),
        ("ansible_password: hunter2", "keys"),
    ],
)
def test_refused_with_file_line_and_key(tmp_path: Path, line: str, message: str) -> None:
    path = write_inventory(
        tmp_path, f"all:\n  hosts:\n    n1:\n      ansible_port: 22\n      {line}\n"
    )
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    err = caught.value
    assert err.exit_code == EXIT_BAD_INPUT
    assert (err.file, err.line, err.key) == (str(path), 5, line.split(":")[0])
    assert message in str(err)


def test_become_variables(tmp_path: Path) -> None:
    path = write_inventory(
        tmp_path,
        """
        all:
          hosts:
            n1: {ansible_become: "yes", ansible_become_user: root}
            n2: {ansible_become: false}
            n3: {}
        """,
    )
    hosts = load_inventory(path).hosts
    assert hosts["n1"].become == Become("root", "sudo")
    assert hosts["n2"].become is None and hosts["n3"].become is None


def test_same_address_behind_different_bastions_is_two_hosts(tmp_path: Path) -> None:
    path = write_inventory(
        tmp_path,
        """
        all:
          hosts:
            a: {ansible_host: 10.0.0.1, ansible_ssh_common_args: "-J b1"}
            b: {ansible_host: 10.0.0.1, ansible_ssh_common_args: "-J b2"}
        """,
    )
    assert set(load_inventory(path).hosts) == {"a", "b"}


# -- ssh_config ---------------------------------------------------------------------------


def test_ssh_config_aliases_fill_what_the_inventory_left_unset(tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(
        textwrap.dedent(
            """
            Host gpu*
              HostName 10.1.0.7
              User alice
              Port 2022
              IdentityFile ~/keys/gpu
              UserKnownHostsFile /etc/xpf/known_hosts
              ProxyJump login
              ConnectTimeout 4
            Host login
              HostName 192.0.2.10
              User jumper
              Port 2200
            """
        )
    )
    path = write_inventory(
        tmp_path,
        """
        all:
          hosts:
            gpu1: {}
            gpu2: {ansible_user: bob, ansible_port: 22}
        """,
    )
    hosts = sshconfig.apply_all(list(load_inventory(path).hosts.values()), str(config))
    gpu1, gpu2 = hosts
    assert (gpu1.address, gpu1.user, gpu1.port) == ("10.1.0.7", "alice", 2022)
    assert gpu1.key_file == str(Path("~/keys/gpu").expanduser())
    assert gpu1.vars["known_hosts"] == "/etc/xpf/known_hosts"
    assert gpu1.jump == (Hop("192.0.2.10", 2200, "jumper"),)
    assert gpu1.connect_timeout == 4.0
    assert (gpu2.address, gpu2.user, gpu2.port) == ("10.1.0.7", "bob", 22)  # inventory wins


def test_ssh_config_off_and_per_inventory_file(tmp_path: Path) -> None:
    config = tmp_path / "cfg"
    config.write_text("Host n1\n  User carol\n")
    path = write_inventory(tmp_path, "all:\n  hosts:\n    n1: {}\n")
    host = load_inventory(path).hosts["n1"]
    assert sshconfig.apply_all([host], None)[0].user == "root"
    assert sshconfig.apply_all([host], str(config))[0].user == "carol"
    path.write_text("all:\n  hosts:\n    n1: {ansible_ssh_common_args: -F none}\n")
    host = load_inventory(path).hosts["n1"]
    assert sshconfig.apply_all([host], str(config))[0].user == "root"


def test_ssh_config_refuses_dev_null_known_hosts(tmp_path: Path) -> None:
    config = tmp_path / "cfg"
    config.write_text("Host *\n  UserKnownHostsFile /dev/null\n")
    path = write_inventory(tmp_path, "all:\n  hosts:\n    n1: {}\n")
    with pytest.raises(InputError) as caught:
        sshconfig.apply_all(list(load_inventory(path).hosts.values()), str(config))
    assert caught.value.key == "UserKnownHostsFile" and caught.value.file == str(config)

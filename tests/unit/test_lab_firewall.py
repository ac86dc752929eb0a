"""The lab firewall's rules: what each fault's rule matches, and that removing one
fault's rules leaves the other's (iptables itself is replaced by a recorder)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from xpufleet.lab import Lab, firewall


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    return Lab(tmp_path / "lab", net="127.0.26", port=22622)


def test_egress_rule_drops_the_nodes_own_connections_to_the_port(lab: Lab) -> None:
    rule = firewall.egress_rule(lab, 2, 6379)
    assert rule[0] == "OUTPUT" and rule[-2:] == ["-j", "DROP"]
    assert rule[rule.index("--dport") + 1] == "6379"
    assert rule[rule.index("--path") + 1] == firewall.node_cgroup(lab, 2)
    assert rule[rule.index("--comment") + 1] == f"{lab.tag}:node2"
    assert "-d" not in rule  # any address: the node cannot reach the port anywhere
    assert "/" not in firewall.node_cgroup(lab, 2) and ":" not in firewall.node_cgroup(lab, 2)


def test_removing_one_chain_keeps_the_other_faults_rules(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = [
        "-A " + shlex.join(firewall.drop_rule(lab, 2, 29500)),
        "-A " + shlex.join(firewall.egress_rule(lab, 2, 6379)),
        "-A " + shlex.join(firewall.egress_rule(lab, 3, 6379)),
        "-A OUTPUT -m comment --comment other-lab:node2 -j DROP",
    ]
    deleted: list[list[str]] = []

    def iptables(*args: str, check: bool = True) -> str:
        if args[0] == "-S":
            return "\n".join(["-P INPUT ACCEPT", *rules]) + "\n"
        deleted.append(list(args))
        return ""

    monkeypatch.setattr(firewall, "iptables", iptables)
    monkeypatch.setattr(firewall, "remove_cgroups", lambda lab, indexes=None: None)
    assert firewall.remove_rules(lab, {2}, chain="OUTPUT") == 1
    assert deleted == [["-D", *firewall.egress_rule(lab, 2, 6379)]]
    deleted.clear()
    assert firewall.remove_rules(lab, {2}, chain="INPUT") == 1
    assert deleted == [["-D", *firewall.drop_rule(lab, 2, 29500)]]
    deleted.clear()
    assert firewall.remove_rules(lab) == 3  # lab.down: every rule of this lab, no other's


def test_the_cgroup2_root_is_found_in_mountinfo() -> None:
    root = firewall.cgroup2_root()
    assert root is None or (root / "cgroup.procs").exists()

"""`--limit` patterns: the selection, checked against the real `ansible --list-hosts`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from xpufleet.errors import EXIT_BAD_INPUT, InventoryError
from xpufleet.inventory import Inventory, load_inventory
from xpufleet.patterns import select_hosts, split_patterns

ROOT = Path(__file__).resolve().parents[2]
NESTED = ROOT / "tests" / "data" / "inventories" / "nested" / "inventory.yaml"
BIN = Path(sys.executable).parent

# nested inventory: login (ungrouped), node1..node6, builder (build);
# rack1 = node1,node2; rack2 = node2,node3,node4; max1550 = rack1+rack2;
# max1100 = node5,node6; gpu = max1550+max1100; spare = node6,node5; nothing_yet = empty
ALL = ["login", "node1", "node2", "node3", "node4", "node5", "node6", "builder"]

CASES = [
    ("all", ALL),
    ("*", ALL),
    ("node3", ["node3"]),
    ("rack2", ["node2", "node3", "node4"]),
    ("max1550", ["node1", "node2", "node3", "node4"]),
    ("ungrouped", ["login"]),
    ("node*", ["node1", "node2", "node3", "node4", "node5", "node6"]),
    ("node?", ["node1", "node2", "node3", "node4", "node5", "node6"]),
    ("rack*", ["node1", "node2", "node3", "node4"]),
    ("~node[13]$", ["node1", "node3"]),
    ("~^(login|builder)$", ["login", "builder"]),
    ("max1100:rack1", ["node1", "node2", "node5", "node6"]),
    ("build,rack1", ["node1", "node2", "builder"]),
    ("build, rack1", ["node1", "node2", "builder"]),
    ("gpu:&spare", ["node5", "node6"]),
    ("rack1:&rack2", ["node2"]),
    ("gpu:!rack2", ["node1", "node5", "node6"]),
    ("!gpu", ["login", "builder"]),
    ("!gpu:!login", ["builder"]),
    ("&spare", ["node5", "node6"]),
    ("rack2:!node3:node5", ["node2", "node4", "node5"]),  # ! applies after every plain part
    ("spare:nothing_yet", ["node5", "node6"]),
    ("rack2[0]", ["node2"]),
    ("rack2[1:]", ["node3", "node4"]),
    ("rack2[-1]", ["node4"]),
    ("rack2[2:9]", ["node4"]),
]


@pytest.fixture(scope="module")
def nested() -> Inventory:
    return load_inventory(NESTED)


@pytest.mark.parametrize(("limit", "expected"), CASES)
def test_limit_selects_in_inventory_order(nested: Inventory, limit: str, expected: list) -> None:
    assert [h.name for h in nested.select(limit)] == expected


def ansible_list_hosts(limit: str, home: Path) -> set[str]:
    config = home / "ansible.cfg"
    config.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(HOME=str(home), ANSIBLE_CONFIG=str(config), ANSIBLE_NOCOLOR="1")
    done = subprocess.run(
        [str(BIN / "ansible"), "all", "-i", str(NESTED), "--limit", limit, "--list-hosts"],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = [ln.strip() for ln in done.stdout.splitlines()]
    assert lines[0].startswith("hosts (")
    return set(lines[1:]) - {""}


@pytest.mark.parametrize(("limit", "expected"), CASES)
def test_limit_agrees_with_ansible(limit: str, expected: list, tmp_path: Path) -> None:
    assert ansible_list_hosts(limit, tmp_path) == set(expected)


@pytest.mark.parametrize(
    ("limit", "words"),
    [
        ("node9", "'node9' matches no host and no group"),
        ("rack2:!nodee3", "'nodee3' matches no host and no group"),
        ("gpu:&typo", "'typo' matches no host and no group"),
        ("gpu:&build", "selects no host"),
        ("nothing_yet", "selects no host"),
        ("rack2[5]", "subscripted pattern"),
        ("~node(", "invalid host pattern"),
    ],
)
def test_limit_refusals_exit_2(nested: Inventory, limit: str, words: str) -> None:
    with pytest.raises(InventoryError) as caught:
        nested.select(limit)
    assert words in caught.value.message
    assert caught.value.key == "limit"
    assert caught.value.exit_code == EXIT_BAD_INPUT


def test_no_limit_is_every_host(nested: Inventory) -> None:
    assert [h.name for h in nested.select(None)] == ALL
    assert [h.name for h in nested.select("  ")] == ALL


def test_split_keeps_brackets_and_ipv6() -> None:
    assert split_patterns("a:b[1:2]:!c") == ["a", "b[1:2]", "!c"]
    assert split_patterns("a, b ,&c") == ["a", "b", "&c"]
    assert split_patterns("fe80::1") == ["fe80::1"]


def test_exact_host_name_wins_over_glob_reading() -> None:
    hosts = ["web[1]", "web1"]
    assert select_hosts("web[1]", hosts, {"all": hosts}) == ["web[1]"]

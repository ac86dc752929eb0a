"""Inventory resolution, checked against the real `ansible-inventory`, and its refusals.

ansible-core is a test dependency: each comparison runs the real command, isolated from
any user configuration (empty ansible.cfg, HOME and cwd in a temporary directory).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from xpufleet.errors import EXIT_BAD_INPUT, InventoryError
from xpufleet.inventory import (
    README,
    expand_host_range,
    load_inventory,
    readme_with_table,
    typo_of,
)
from xpufleet.variables import VARIABLES

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "inventories"
NESTED = DATA / "nested" / "inventory.yaml"
BAD = DATA / "bad"
BIN = Path(sys.executable).parent
GOOD_INVENTORIES = [NESTED, *sorted((ROOT / "inventory").glob("*.yaml"))]


def isolated_env(home: Path) -> dict[str, str]:
    """Environment for Ansible that reads no user or system configuration."""
    config = home / "ansible.cfg"
    config.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(HOME=str(home), ANSIBLE_CONFIG=str(config), ANSIBLE_NOCOLOR="1")
    return env


def ansible_inventory_list(path: Path, home: Path, limit: str | None = None) -> dict[str, Any]:
    command = [str(BIN / "ansible-inventory"), "-i", str(path.resolve()), "--list"]
    if limit:
        command += ["--limit", limit]
    done = subprocess.run(
        command, cwd=home, env=isolated_env(home), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def ours(document: dict[str, Any]) -> dict[str, Any]:
    """Through JSON, as `invoke inventory --json` prints it."""
    return json.loads(json.dumps(document))


# ------------------------------------------------------------ agreement with Ansible


@pytest.mark.parametrize("path", GOOD_INVENTORIES, ids=lambda p: str(p.relative_to(ROOT)))
def test_resolution_matches_ansible_inventory(path: Path, tmp_path: Path) -> None:
    expected = ansible_inventory_list(path, tmp_path)
    assert expected["_meta"]["hostvars"], "ansible-inventory saw no host variables"
    assert ours(load_inventory(path).to_ansible_list()) == expected


@pytest.mark.parametrize("limit", ["rack2:!node4", "gpu:&spare", "max1*,login", "~node[13]$"])
def test_limited_listing_matches_ansible_inventory(limit: str, tmp_path: Path) -> None:
    expected = ansible_inventory_list(NESTED, tmp_path, limit=limit)
    inventory = load_inventory(NESTED)
    selected = [h.name for h in inventory.select(limit)]
    assert ours(inventory.to_ansible_list(only=selected)) == expected


def test_invoke_inventory_json_matches_ansible_inventory(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(BIN / "invoke"), "-r", str(ROOT), "inventory", "--json", "--hosts", str(NESTED)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ansible_inventory_list(NESTED, tmp_path)


def test_invoke_inventory_refuses_bad_inventory_with_exit_2() -> None:
    bad = BAD / "typo_nics.yaml"
    done = subprocess.run(
        [str(BIN / "invoke"), "-r", str(ROOT), "inventory", "--hosts", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == EXIT_BAD_INPUT
    assert done.stdout == ""
    stderr = done.stderr.replace("\n", "")  # rich folds long lines at 80 columns
    assert f"{bad}:5: key 'nics': " in stderr
    assert "did you mean 'nic'" in stderr


# ----------------------------------------------------------------- the rules, named


@pytest.fixture(scope="module")
def nested() -> Any:
    return load_inventory(NESTED)


def test_precedence_levels(nested: Any) -> None:
    level = {name: host.vars["level"] for name, host in nested.hosts.items()}
    assert level == {
        # group_vars/all beats every inline group var (Ansible's real order)
        "login": "all-file",
        "builder": "all-file",
        # host_vars file beats everything
        "node1": "node1-file",
        # inline host var beats group_vars files
        "node2": "node2-inline-in-rack2",
        # host_vars directory: files in name order, the last one wins
        "node3": "node3-dir-b",
        # deepest group's file (no extension) beats the parents' files
        "node4": "rack2-file-no-extension",
        # ansible_group_priority 5 beats the other depth-2 groups
        "node5": "max1100-file",
        "node6": "max1100-file",
    }


def test_each_level_contributes(nested: Any) -> None:
    node3 = nested.hosts["node3"].vars
    assert node3["only_all_inline"] == "from-all-inline"
    assert node3["only_gpu_inline"] == "from-gpu-inline"
    assert node3["only_all_file"] == "from-all-file"
    assert node3["only_gpu_dir"] == "from-gpu-dir-20"  # 20-override.yaml after 10-base.yml
    assert node3["mem_fraction_static"] == 0.8
    assert nested.hosts["login"].vars["only_ungrouped_file"] is True


def test_same_depth_groups_merge_alphabetically(nested: Any) -> None:
    assert nested.hosts["node2"].groups == ("gpu", "max1550", "rack1", "rack2")
    assert nested.hosts["node2"].vars["rack"] == 2  # rack2 after rack1


def test_group_vars_directory_beats_file_and_skips_junk(nested: Any) -> None:
    assert nested.hosts["node1"].vars["rack_label"] == "rack1-dir"
    assert "must-be-ignored" not in json.dumps(nested.to_ansible_list())


def test_dicts_are_replaced_not_merged(nested: Any) -> None:
    assert nested.hosts["node4"].vars["ccl_env"] == {"CCL_ALLREDUCE": "ring"}
    assert nested.hosts["node3"].vars["ccl_env"] == {
        "CCL_LOG_LEVEL": "warn",
        "CCL_WORKER_COUNT": 1,
    }


def test_hosts_do_not_share_mutable_values() -> None:
    inventory = load_inventory(NESTED)
    inventory.hosts["node1"].vars["sglang_extra_args"].append("--changed")
    assert "--changed" not in inventory.hosts["node2"].vars["sglang_extra_args"]


def test_connection_variables(nested: Any) -> None:
    base = NESTED.parent
    node4 = nested.hosts["node4"]
    assert (node4.address, node4.port, node4.user) == ("10.0.0.4", 22, "xpu")
    assert node4.key_file == str(base / "keys" / "id_node4")
    assert node4.vars["ansible_ssh_private_key_file"] == "keys/id_node4"  # raw value kept
    login = nested.hosts["login"]
    assert (login.address, login.port) == ("127.0.0.9", 2200)  # `login:2200`
    assert nested.hosts["node5"].port == 2222
    builder = nested.hosts["builder"]
    assert builder.user == "builder"  # ansible_ssh_user is read after ansible_user


def test_known_hosts_is_absolute_beside_the_inventory(nested: Any) -> None:
    expected = str(NESTED.parent / "keys" / "known_hosts")
    assert {h.vars["known_hosts"] for h in nested.hosts.values()} == {expected}
    assert nested.hostvars["node1"]["known_hosts"] == "keys/known_hosts"


def test_defaults_when_nothing_is_set(tmp_path: Path) -> None:
    path = tmp_path / "inv.yaml"
    path.write_text("all:\n  hosts:\n    alpha:\n    beta:\n")
    inventory = load_inventory(path)
    alpha = inventory.hosts["alpha"]
    assert (alpha.address, alpha.port, alpha.user, alpha.key_file) == ("alpha", 22, "root", None)
    assert alpha.groups == ("ungrouped",)
    assert inventory.to_ansible_list()["ungrouped"] == {"hosts": ["alpha", "beta"]}


def test_groups_and_inventory_order(nested: Any) -> None:
    assert list(nested.hosts) == [
        "login",
        "node1",
        "node2",
        "node3",
        "node4",
        "node5",
        "node6",
        "builder",
    ]
    assert nested.groups["all"].children == [
        "ungrouped",
        "gpu",
        "spare",
        "nothing_yet",
        "build",
    ]
    assert nested.groups["rack2"].hosts == ["node2", "node3", "node4"]
    assert nested.groups["max1550"].children == ["rack1", "rack2"]
    assert nested.groups["nothing_yet"].hosts == []
    assert nested.groups["rack2"].vars["level"] == "rack2-file-no-extension"


def test_host_ranges() -> None:
    assert expand_host_range("node[1:3]") == ["node1", "node2", "node3"]
    assert expand_host_range("n[08:10]x") == ["n08x", "n09x", "n10x"]
    assert expand_host_range("rack-[a:c]-[1:2]") == [
        "rack-a-1",
        "rack-a-2",
        "rack-b-1",
        "rack-b-2",
        "rack-c-1",
        "rack-c-2",
    ]
    assert expand_host_range("n[0:6:3]") == ["n0", "n3", "n6"]
    with pytest.raises(ValueError):
        expand_host_range("n[01:4]")


def test_typo_detection() -> None:
    assert typo_of("nics") == "nic"
    assert typo_of("tile") == "tiles"
    assert typo_of("model_pth") == "model_path"
    for name in ("env", "rack", "role", "ansible_hostt", "nic", "level"):
        assert typo_of(name) is None, name


def test_readme_table_matches_registry() -> None:
    text = README.read_text(encoding="utf-8")
    assert readme_with_table(text) == text, "run: .venv/bin/python -m xpufleet.inventory"
    for name in VARIABLES:
        assert f"| `{name}` |" in text
    for name in ("ansible_host", "ansible_port", "ansible_user", "ansible_ssh_private_key_file"):
        assert f"`{name}`" in text


# ------------------------------------------------------------------------- refusals

#: (inventory under tests/data/inventories/bad, file the error names, line, key, words)
REFUSALS = [
    ("yaml_syntax.yaml", "yaml_syntax.yaml", 5, "nic", "YAML syntax error"),
    ("hosts_list.yaml", "hosts_list.yaml", 4, "hosts", "must be a mapping"),
    ("host_not_mapping.yaml", "host_not_mapping.yaml", 3, "node1", "must map to its variables"),
    ("group_key_typo.yaml", "group_key_typo.yaml", 4, "host", "did you mean 'hosts'"),
    ("typo_nics.yaml", "typo_nics.yaml", 5, "nics", "did you mean 'nic'"),
    ("typo_tile.yaml", "typo_tile.yaml", 6, "tile", "did you mean 'tiles'"),
    ("typo_model_pth.yaml", "typo_model_pth.yaml", 3, "model_pth", "did you mean 'model_path'"),
    ("bad_type.yaml", "bad_type.yaml", 3, "tiles", "expected an integer, got str '8'"),
    ("bool_for_int.yaml", "bool_for_int.yaml", 4, "cards", "expected an integer, got bool"),
    ("bad_choice.yaml", "bad_choice.yaml", 5, "device_hierarchy", "not one of: FLAT, COMPOSITE"),
    ("unquoted_version.yaml", "unquoted_version.yaml", 3, "oneapi_min_version", "quote it"),
    ("bad_port.yaml", "bad_port.yaml", 7, "ansible_port", "not a port number"),
    ("bad_port_pattern.yaml", "bad_port_pattern.yaml", 3, "ansible_port", "not a port number"),
    ("bad_range.yaml", "bad_range.yaml", 3, "node[01:4]", "bad host range"),
    ("dup_address.yaml", "dup_address.yaml", 10, "ansible_host", "'node3' has the same"),
    ("dup_address_default.yaml", "dup_address_default.yaml", 5, "node2", "as host 'node1'"),
    ("dup_key.yaml", "dup_key.yaml", 7, "node1", "duplicate key (first at line 3)"),
    ("group_loop.yaml", "group_loop.yaml", 8, "a", "would contain itself"),
    ("vault.yaml", "vault.yaml", 3, "token", "Vault"),
    (
        "typo_in_group_vars/inventory.yaml",
        "typo_in_group_vars/group_vars/gpu.yml",
        3,
        "model_pth",
        "did you mean 'model_path'",
    ),
    (
        "typo_in_host_vars/inventory.yaml",
        "typo_in_host_vars/host_vars/node1/20-more.yml",
        2,
        "cards",
        "expected an integer, got str 'four'",
    ),
    (
        "vars_not_mapping/inventory.yaml",
        "vars_not_mapping/group_vars/all.yml",
        1,
        "all",
        "must be a mapping of variables",
    ),
]


@pytest.mark.parametrize(("inventory", "file", "line", "key", "words"), REFUSALS)
def test_refusal_names_file_line_and_key(
    inventory: str, file: str, line: int, key: str, words: str
) -> None:
    with pytest.raises(InventoryError) as caught:
        load_inventory(BAD / inventory)
    error = caught.value
    assert (error.file, error.line, error.key) == (str(BAD / file), line, key)
    assert words in error.message
    assert str(error).startswith(f"{BAD / file}:{line}: key '{key}': ")
    assert error.exit_code == EXIT_BAD_INPUT


@pytest.mark.parametrize("inventory", ["empty.yaml", "not_a_mapping.yaml"])
def test_refusal_of_a_whole_file(inventory: str) -> None:
    with pytest.raises(InventoryError) as caught:
        load_inventory(BAD / inventory)
    assert (caught.value.file, caught.value.line) == (str(BAD / inventory), 1)


def test_missing_inventory(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(InventoryError) as caught:
        load_inventory(missing)
    assert (caught.value.file, caught.value.key) == (str(missing), "hosts")
    assert "not found" in caught.value.message


def test_unknown_names_pass_through(tmp_path: Path) -> None:
    path = tmp_path / "inv.yaml"
    path.write_text(
        "all:\n  vars:\n    ntp_server: time.example\n    env: prod\n"
        "    ansible_python_interpreter: /usr/bin/python3\n  hosts:\n    n1:\n"
    )
    assert load_inventory(path).hosts["n1"].vars["env"] == "prod"


def test_ansible_accepts_what_we_refuse_for_our_own_reasons(tmp_path: Path) -> None:
    """The typo refusal is ours: plain Ansible reads the same file (so it is not a YAML slip)."""
    listing = ansible_inventory_list(BAD / "typo_nics.yaml", tmp_path)
    assert listing["_meta"]["hostvars"]["node1"]["nics"] == "eth0"

"""Host variables resolved once per host (variables.resolve, `Host.var`): registry <
roles' defaults < inventory, Jinja2 rendered, registered values typed; a value that does
not render or does not fit its type is bad input naming the file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from xpufleet.checks.expect import Expect
from xpufleet.errors import InputError
from xpufleet.host import Host
from xpufleet.inventory import load_inventory
from xpufleet.launch.plan import plan_launch
from xpufleet.launch.render import env_file
from xpufleet.variables import VARIABLES, HostVars


def inventory(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hosts.yaml"
    path.write_text(text)
    return path


def hosts_of(path: Path) -> dict[str, Host]:
    return {h.name: h for h in load_inventory(path).select(None)}


def test_precedence_and_jinja_yield_typed_values(tmp_path: Path) -> None:
    path = inventory(
        tmp_path,
        """
all:
  vars:
    base_port: 29000
    install_dir: /srv/xf
    device_hierarchy: COMPOSITE
    cards: 2
    tiles: 4
  hosts:
    node1:
      ansible_host: 10.0.0.1
      rendezvous_port: "{{ base_port + 500 }}"
      model_size_gb: "{{ 2 * 3 }}.5"
      device_ids: ["{{ 1 }}", 0]
    node2:
      ansible_host: 10.0.0.2
""",
    )
    node1, node2 = hosts_of(path).values()
    v = node1.var
    assert isinstance(v, HostVars)
    # rendered, then typed: the planner and checks get numbers, not strings
    assert v.rendezvous_port == 29500 and isinstance(v.rendezvous_port, int)
    assert v.model_size_gb == 6.5
    assert v.device_ids == [1, 0]
    # a role default (sglang_env_file) follows the inventory's install_dir
    assert v.values["sglang_env_file"] == "/srv/xf/env/sglang.sh"
    assert env_file(node1) == "/srv/xf/env/sglang.sh"
    # node2 keeps the registry default
    assert node2.var.rendezvous_port == VARIABLES["rendezvous_port"].default
    # resolved once: the same object every time
    assert node1.var is node1.var
    # checks and planner read the same typed values
    assert Expect.from_host(node1, node1).cards == 2
    plan = plan_launch([node1], tp=2, nnodes=1)
    assert plan.rendezvous_port == 29500


BAD_AFTER_RENDERING = [
    # (the host's line, the error's key, words the message must hold)
    ("sglang_port: \"{{ 'http' }}\"", "sglang_port", "'http'"),
    ('device_hierarchy: "{{ hierarchy }}"', "device_hierarchy", "not one of: FLAT, COMPOSITE"),
    ('venv: "{{ no_such_variable }}/venv"', "venv", "no_such_variable"),
    ("rendezvous_port: \"{{ 29000 + 'x' }}\"", "rendezvous_port", "unsupported operand"),
]


@pytest.mark.parametrize(("line", "key", "words"), BAD_AFTER_RENDERING)
def test_a_value_bad_once_rendered_names_file_line_and_key(
    tmp_path: Path, line: str, key: str, words: str
) -> None:
    """Wrong type, a choice that is not one, an undefined name: bad input, exit 2."""
    text = "all:\n  vars:\n    hierarchy: flat\n  hosts:\n    node1:\n"
    path = inventory(tmp_path, text + f"      ansible_host: 10.0.0.1\n      {line}\n")
    (node1,) = hosts_of(path).values()
    with pytest.raises(InputError) as caught:
        node1.var  # noqa: B018
    error = caught.value
    assert error.key == key and error.exit_code == 2
    assert error.file == str(path) and error.line == 7
    assert words in str(error) and "node1" in str(error)


def test_a_plain_wrong_type_is_still_refused_at_load(tmp_path: Path) -> None:
    path = inventory(
        tmp_path,
        """
all:
  hosts:
    node1:
      ansible_host: 10.0.0.1
      cards: four
""",
    )
    with pytest.raises(InputError, match="cards"):
        load_inventory(path)


def test_an_empty_value_keeps_the_default() -> None:
    host = Host("n", "10.0.0.1", vars={"engine": None, "nic": None})
    assert host.var.engine == "sglang" and host.var.nic is None

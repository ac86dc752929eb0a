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


def test_a_value_that_renders_to_the_wrong_type_names_file_line_and_key(tmp_path: Path) -> None:
    path = inventory(
        tmp_path,
        """
all:
  hosts:
    node1:
      ansible_host: 10.0.0.1
      sglang_port: "{{ 'http' }}"
""",
    )
    (node1,) = hosts_of(path).values()
    with pytest.raises(InputError) as caught:
        node1.var  # noqa: B018
    error = caught.value
    assert error.key == "sglang_port"
    assert error.file == str(path) and error.line == 6
    assert "node1" in str(error) and "'http'" in str(error)


def test_choices_are_checked_after_rendering(tmp_path: Path) -> None:
    path = inventory(
        tmp_path,
        """
all:
  vars:
    hierarchy: flat
  hosts:
    node1:
      ansible_host: 10.0.0.1
      device_hierarchy: "{{ hierarchy }}"
""",
    )
    (node1,) = hosts_of(path).values()
    with pytest.raises(InputError, match="not one of: FLAT, COMPOSITE") as caught:
        node1.var  # noqa: B018
    assert caught.value.key == "device_hierarchy"


def test_an_undefined_name_in_a_template_is_bad_input(tmp_path: Path) -> None:
    path = inventory(
        tmp_path,
        """
all:
  hosts:
    node1:
      ansible_host: 10.0.0.1
      venv: "{{ no_such_variable }}/venv"
""",
    )
    (node1,) = hosts_of(path).values()
    with pytest.raises(InputError, match="no_such_variable") as caught:
        node1.var  # noqa: B018
    assert caught.value.key == "venv" and caught.value.file == str(path)


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

"""The lab as a cluster: commands on all nodes, real isolation, quoting, simulated tools."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import yaml

from xpufleet import shell
from xpufleet.executor import fan_out
from xpufleet.host import Host
from xpufleet.lab import Lab
from xpufleet.lab.pybase import BaseEnv, base_root
from xpufleet.transport import Session

pytestmark = pytest.mark.lab


def test_a_command_runs_on_every_node(lab: Lab, hosts: list[Host]) -> None:
    outcomes = fan_out(hosts, lambda s: s.run("hostname; id -u").stdout.split(), lab.ssh_options())
    assert {name: o.value for name, o in outcomes.items()} == {
        f"node{i}": [f"node{i}", "0"] for i in range(1, 5)
    }
    assert all(o.ok for o in outcomes.values())


def test_status_reports_every_node_up(lab: Lab) -> None:
    status = lab.status()
    assert status.all_up
    assert [(n.name, n.address, n.state) for n in status.nodes] == [
        (f"node{i}", lab.node_address(i), "up") for i in range(1, 5)
    ]


def test_up_again_keeps_the_running_nodes(lab: Lab) -> None:
    before = {n.name: (n.holder, n.sshd) for n in lab.status().nodes}
    after = {n.name: (n.holder, n.sshd) for n in lab.up(nodes=4).nodes}
    assert after == before


NODE_DIRS = ["/opt/intel", "/opt/xpufleet", "/var/lib/xpufleet", "/models"]


@pytest.mark.parametrize("directory", NODE_DIRS)
def test_node_directories_are_isolated(lab: Lab, on, directory: str) -> None:
    name = f"{directory}/isolation-{uuid.uuid4().hex}"
    assert on(1, f"echo node1 > {shell.quote(name)}").ok
    try:
        assert on(1, f"cat {shell.quote(name)}").stdout == "node1\n"
        assert on(2, f"test -e {shell.quote(name)}").exit_status == 1
        assert not Path(name).exists()  # nor on the host
    finally:
        on(1, f"rm -f {shell.quote(name)}")


def test_nodes_have_their_own_hostname_and_resolve_each_other(on) -> None:
    assert on(3, "hostname").stdout.strip() == "node3"
    resolved = on(1, "getent hosts node3").stdout.split()
    assert resolved[:2] == [resolved[0], "node3"] and resolved[0].endswith(".3")


def test_node_path_has_its_bin_dir_first_and_no_pyenv(lab: Lab, on) -> None:
    path = on(1, "echo $PATH; command -v python3").stdout.split()
    assert path[0].split(":")[0] == str(lab.node_dir(1) / "bin")
    assert "pyenv" not in path[0]
    assert path[1] == "/usr/bin/python3"


HOSTILE = [
    "$(touch {marker})",
    "`touch {marker}`",
    "'; touch {marker}; '",
    '"; touch {marker}; "',
    "'; rm -rf /'",
    "a b\tc\nd $HOME ${PATH} * ? [x] ; | & < > \\ ! #",
]


@pytest.mark.parametrize("template", HOSTILE)
def test_hostile_values_arrive_as_literal_text(lab: Lab, hosts: list[Host], template: str) -> None:
    marker = f"/tmp/xpufleet-hostile-{uuid.uuid4().hex}"
    value = template.replace("{marker}", marker)
    with Session(hosts[0], lab.ssh_options()) as session:
        quoted = session.run("printf '%s' " + shell.quote(value)).stdout
        joined = session.run(shell.join(["printf", "%s", value])).stdout
        from_env = session.run('printf "%s" "$HOSTILE"', env={"HOSTILE": value}).stdout
    assert quoted == joined == from_env == value
    assert not Path(marker).exists()  # nodes share the host's /tmp


def test_simulated_tools_follow_the_hierarchy(on) -> None:
    discovery = json.loads(on(1, "xpu-smi discovery -j").stdout)
    assert [d["pci_device_id"] for d in discovery["device_list"]] == ["0xbd5"] * 4
    flat = on(1, "sycl-ls").stdout.count("[level_zero:gpu]")
    composite = on(1, "ZE_FLAT_DEVICE_HIERARCHY=COMPOSITE sycl-ls").stdout.count("[level_zero:gpu]")
    masked = on(1, "ZE_AFFINITY_MASK=0,3 sycl-ls").stdout.count("[level_zero:gpu]")
    assert (flat, composite, masked) == (8, 4, 2)


def test_driver_facts_and_packages(on) -> None:
    result = on(
        2,
        "cat /sys/class/drm/card0/device/vendor /sys/class/drm/card0/device/device "
        "/sys/module/i915/version; grep DRIVER /sys/class/drm/card3/device/uevent; "
        "dpkg-query -W -f '${Package} ${Status}\\n' level-zero intel-level-zero-gpu "
        "intel-opencl-icd; ls /sys/class/net",
    )
    lines = result.stdout.splitlines()
    assert lines[:4] == ["0x8086", "0x0bd5", "I915_23.10.32_PSB_231129.32", "DRIVER=i915"]
    assert sorted(ln.split()[0] for ln in lines[4:7]) == [
        "intel-level-zero-gpu",
        "intel-opencl-icd",
        "level-zero",
    ]
    assert all(ln.endswith("install ok installed") for ln in lines[4:7])
    assert "lo" in lines[7:]  # the real /sys/class entries are still there


def test_oneapi_tree(on) -> None:
    result = on(
        4,
        "readlink /opt/intel/oneapi/ccl/latest /opt/intel/oneapi/compiler/latest; "
        ". /opt/intel/oneapi/setvars.sh >/dev/null; echo $CCL_ROOT; "
        "test -x /opt/intel/oneapi/2025.1/oneapi-vars.sh && echo unified",
    )
    ccl_root = "/opt/intel/oneapi/ccl/2021.15"
    assert result.stdout.split() == ["2021.15", "2025.1", ccl_root, "unified"]


def test_torch_in_the_base_environment_sees_the_simulated_node(lab: Lab, on) -> None:
    base = BaseEnv(base_root())
    inventory = yaml.safe_load(lab.inventory_path.read_text())["all"]["vars"]
    assert (inventory["python"], inventory["base_site_packages"]) == (
        str(base.python),
        [str(base.site_packages)],
    )
    script = (
        "import json, torch, torch.distributed as d; "
        "p = torch.xpu.get_device_properties(0); "
        "print(json.dumps([torch.xpu.is_available(), torch.xpu.device_count(), "
        "d.is_xccl_available(), p.name, p.total_memory // 2**20]))"
    )
    result = on(1, f"{base.python} -W ignore -c {shell.quote(script)}")
    assert json.loads(result.stdout) == [True, 8, True, "Intel(R) Data Center GPU Max 1550", 65520]

"""What a lab node simulates, checked against the real tools' samples in tests/fixtures.

The simulated tools run here on a fake node root (a temp dir holding the generated
/opt/intel, /sys and /etc files), so no lab has to be up.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from xpufleet.lab.cluster import default_inventory
from xpufleet.lab.profile import NodeSpec
from xpufleet.lab.sim import generate, labsim

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
PROJECT = Path(__file__).resolve().parent.parent.parent


def _node_root(tmp_path: Path, spec: NodeSpec, *, release: str | None = None) -> Path:
    root = tmp_path / "node"
    lab = {"node.json": generate.file(json.dumps(generate.node_description("node1", spec)))}
    generate.write_tree(root / "opt/intel/.lab", lab)
    generate.write_tree(root / "opt/intel/oneapi", generate.oneapi_tree(release or spec.oneapi))
    generate.write_tree(root / "sys", generate.sysfs_tree("node1", spec))
    generate.write_tree(root / "etc/OpenCL/vendors", {"intel.icd": generate.file("x\n")})
    return root


@pytest.fixture
def node(tmp_path: Path) -> Path:
    return _node_root(tmp_path, NodeSpec())


def _widths(text: str) -> set[int]:
    return {len(line) for line in text.splitlines() if line.startswith(("+", "|"))}


def test_discovery_table_has_the_real_layout(node: Path) -> None:
    code, out, _ = labsim.xpu_smi(["discovery"], {}, str(node))
    real = (FIXTURES / "01_xpu-smi_discovery_aurora_max1550_6gpu.txt").read_text()
    assert code == 0
    assert _widths(out) == _widths(real)
    labels = {re.sub(r":.*", "", ln.split("|")[2].strip()) for ln in out.splitlines()[3:9]}
    real_labels = {re.sub(r":.*", "", ln.split("|")[2].strip()) for ln in real.splitlines()[3:9]}
    assert labels == real_labels
    assert out.count("Device Name: Intel(R) Data Center GPU Max 1550") == 4
    assert out.endswith("+\n\n")  # like the sample, a blank line after the table


def test_discovery_json_uses_the_real_key_names(node: Path) -> None:
    code, out, _ = labsim.xpu_smi(["discovery", "-j"], {}, str(node))
    real = json.loads((FIXTURES / "03b_xpumcli_discovery_j_0x020a_NOT_MAX.json").read_text())
    devices = json.loads(out)["device_list"]
    assert code == 0 and len(devices) == 4
    assert set(real["device_list"][0]) <= set(devices[0])
    assert [d["device_id"] for d in devices] == [0, 1, 2, 3]
    assert {d["pci_device_id"] for d in devices} == {"0xbd5"}


def test_discovery_detail(node: Path) -> None:
    code, out, _ = labsim.xpu_smi(["discovery", "-d", "2", "-j"], {}, str(node))
    detail = json.loads(out)
    assert code == 0
    assert (detail["number_of_tiles"], detail["pci_device_id"]) == ("2", "0xbd5")
    assert detail["driver_version"] == "I915_23.10.32_PSB_231129.32"
    assert all(isinstance(v, str) for v in detail.values())  # as in fixture 02e
    code, out, _ = labsim.xpu_smi(["discovery", "-d", "9"], {}, str(node))
    assert code == 1 and "not found" in out


def test_version_matches_the_real_output(node: Path) -> None:
    code, out, _ = labsim.xpu_smi(["-v"], {}, str(node))
    real = (FIXTURES / "04_xpu-smi_version_aurora.txt").read_text()
    assert code == 0 and out.strip() == real.strip()


def test_precheck_table_has_the_real_layout(node: Path) -> None:
    code, out, _ = labsim.xpu_smi(["diag", "--precheck"], {}, str(node))
    real = (FIXTURES / "05a_xpu-smi_diag_precheck_userguide.txt").read_text()
    assert code == 0 and _widths(out) == _widths(real)
    assert out.count("| GPU ") == 4 and "Status: Pass" in out


def test_no_driver_means_no_devices(node: Path) -> None:
    generate.remove_path(node / "sys/module/i915")
    assert labsim.xpu_smi(["discovery"], {}, str(node))[1] == "No device discovered\n"
    assert json.loads(labsim.xpu_smi(["discovery", "-j"], {}, str(node))[1]) == {"device_list": []}
    assert "level_zero" not in labsim.sycl_ls({}, str(node))[1]


NEW_LINE = re.compile(
    r"^\[level_zero:gpu\]\[level_zero:\d+\] Intel\(R\) oneAPI Unified Runtime over Level-Zero, "
    r"Intel\(R\) Data Center GPU Max \d+ 12\.60\.7 \[1\.3\.\d+\]$"
)


def test_sycl_ls_new_format_one_line_per_tile(node: Path) -> None:
    real = (FIXTURES / "07a_sycl-ls_new_format_Max1100_2cards.txt").read_text()
    assert all(NEW_LINE.match(ln) for ln in real.splitlines() if ln.startswith("[level_zero"))
    out = labsim.sycl_ls({}, str(node))[1]
    gpus = [ln for ln in out.splitlines() if ln.startswith("[level_zero")]
    assert len(gpus) == 8 and all(NEW_LINE.match(ln) for ln in gpus)
    assert out.count("[opencl:gpu]") == 8 and out.count("[opencl:cpu]") == 1


@pytest.mark.parametrize(
    ("env", "count"),
    [
        ({"ZE_FLAT_DEVICE_HIERARCHY": "COMPOSITE"}, 4),
        ({"ZE_AFFINITY_MASK": "0,5,7"}, 3),
        ({"ZE_FLAT_DEVICE_HIERARCHY": "COMPOSITE", "ZE_AFFINITY_MASK": "1.0,1.1"}, 2),
        ({"ZE_AFFINITY_MASK": "42"}, 0),
    ],
)
def test_sycl_ls_follows_level_zero_environment(node: Path, env: dict, count: int) -> None:
    assert labsim.sycl_ls(env, str(node))[1].count("[level_zero:gpu]") == count


def test_sycl_ls_old_format_with_old_oneapi(tmp_path: Path) -> None:
    node = _node_root(tmp_path, NodeSpec(), release="2023.2")
    out = labsim.sycl_ls({}, str(node))[1]
    real = (FIXTURES / "07f_sycl-ls_old_format_FLAT_4xMax1550_8devices_WRAPPED.txt").read_text()
    prefix = re.compile(r"^\[ext_oneapi_level_zero:gpu:\d+\] Intel\(R\) Level-Zero, ")
    real_lines = [ln for ln in real.splitlines() if prefix.match(ln)]
    lines = [ln for ln in out.splitlines() if prefix.match(ln)]
    assert len(lines) == len(real_lines) == 8
    assert "[level_zero:gpu]" not in out


def test_max1100_composite_node(tmp_path: Path) -> None:
    spec = NodeSpec(gpu_model="max1100", cards=2, hierarchy="COMPOSITE")
    node = _node_root(tmp_path, spec)
    out = labsim.sycl_ls({}, str(node))[1]
    assert out.count("Max 1100") == 4 and out.count("[level_zero:gpu]") == 2
    assert (node / "sys/class/drm/card1/device/device").read_text() == "0x0bda\n"


def test_sysfs_driver_facts(node: Path) -> None:
    uevent = (node / "sys/class/drm/card0/device/uevent").read_text().splitlines()
    assert {"DRIVER=i915", "PCI_ID=8086:0BD5", "PCI_SLOT_NAME=0000:29:00.0"} <= set(uevent)
    assert (node / "sys/class/drm/card0/device/vendor").read_text() == "0x8086\n"
    assert (node / "sys/module/i915/version").read_text() == "I915_23.10.32_PSB_231129.32\n"
    assert sorted(os.listdir(node / "sys/class/drm/card0/gt")) == ["gt0", "gt1"]


def test_torch_device_properties_print_like_torch(node: Path) -> None:
    described = labsim.load_node(str(node))
    assert described is not None
    card, tile = labsim.devices(described, {}, str(node))[0]
    props = labsim.device_properties(described, {"driver_version": "1.3.29138+29"}, card, tile)
    real = (FIXTURES / "10a_torch_xpu_get_device_properties_aurora_FLAT_tile.txt").read_text()
    real_props = real[real.index("_XpuDeviceProperties(") :].strip()
    keys = re.findall(r"(\w+)=", repr(props))
    assert keys == re.findall(r"(\w+)=", real_props)
    assert "total_memory=65520MB" in repr(props) and props.total_memory == 65520 * 2**20


def test_oneapi_trees() -> None:
    new = generate.oneapi_tree("2025.1")
    assert new["ccl/latest"].link == "2021.15" and new["compiler/latest"].link == "2025.1"
    assert "2025.1/oneapi-vars.sh" in new and "setvars.sh" in new
    old = generate.oneapi_tree("2023.2")
    assert old["ccl/latest"].link == "2021.10.0"
    assert not any(path.startswith("2023.2/") for path in old)


def test_dpkg_status_appends_the_simulated_packages() -> None:
    real = "Package: bash\nStatus: install ok installed\nVersion: 5.2\n\n" + (
        "Package: level-zero\nStatus: install ok installed\nVersion: 0.1\n"
    )
    status = generate.dpkg_status(real, NodeSpec())
    records = [
        dict(ln.split(": ", 1) for ln in record.splitlines() if ": " in ln and ln[0] != " ")
        for record in status.strip().split("\n\n")
    ]
    assert [r["Package"] for r in records] == [
        "bash",
        "level-zero",
        "intel-level-zero-gpu",
        "intel-opencl-icd",
    ]
    assert records[1]["Version"] == "1.20.2"
    fixture = (FIXTURES / "12b_dpkg_s_level-zero_opencl_PVC_itex-issue75_PARTIAL.txt").read_text()
    start = fixture.index("Package:")
    first = fixture[start : fixture.index("Package:", start + 1)]
    fixture_fields = {ln.split(":", 1)[0] for ln in first.splitlines() if ": " in ln}
    assert set(records[2]) <= fixture_fields
    assert records[2]["Version"] == "1.3.29138.29-881~22.04"


def test_sshd_config_sets_path_and_clock_skew(tmp_path: Path) -> None:
    kwargs = {
        "address": "127.0.9.3",
        "port": 22999,
        "host_key": tmp_path / "key",
        "authorized_keys": tmp_path / "ak",
        "pid_file": tmp_path / "pid",
        "bin_dir": tmp_path / "bin",
    }
    plain = generate.sshd_config(**kwargs, clock_skew=None)
    skewed = generate.sshd_config(**kwargs, clock_skew=-120)
    assert "ListenAddress 127.0.9.3:22999" in plain and "UsePAM no" in plain
    assert f"SetEnv PATH={tmp_path / 'bin'}:/usr/local/sbin" in plain and "FAKETIME" not in plain
    assert "FAKETIME=-120" in skewed and "LD_PRELOAD=" in skewed and "pyenv" not in skewed


def test_write_tree_is_idempotent_and_prunes(tmp_path: Path) -> None:
    tree = generate.oneapi_tree("2025.1")
    assert generate.write_tree(tmp_path, tree, prune=True) > 0
    assert generate.write_tree(tmp_path, tree, prune=True) == 0
    generate.write_tree(tmp_path, generate.oneapi_tree("2023.2"), prune=True)
    assert sorted(os.listdir(tmp_path / "ccl")) == ["2021.10.0", "latest"]
    assert not (tmp_path / "2025.1").exists()


def test_in_place_write_keeps_the_inode(tmp_path: Path) -> None:
    target = tmp_path / "hosts"
    generate.write_tree(tmp_path, {"hosts": generate.file("one\n", in_place=True)})
    inode = target.stat().st_ino
    generate.write_tree(tmp_path, {"hosts": generate.file("two\n", in_place=True)})
    assert target.read_text() == "two\n" and target.stat().st_ino == inode


def test_committed_lab_inventory_is_the_generated_one() -> None:
    assert (PROJECT / "inventory" / "lab.yaml").read_text() == default_inventory()


def test_xpu_smi_ps_shows_the_card_each_process_selected(node: Path) -> None:
    """The lab's `xpu-smi ps` answers from what the simulated torch.xpu.set_device of each
    process recorded: a rank that selected the wrong device shows there, and the
    supervisor's device check names it (real processes, real /proc)."""
    import subprocess
    import sys

    from xpufleet.launch.remote import supervisor

    (node / "opt/intel/.lab-xpu-procs").mkdir()
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import labsim; "
        "labsim.record_device({'index': int(sys.argv[3])}, 0, sys.argv[2]); "
        "print('ok', flush=True); sys.stdin.read()"
    )
    sim_dir = str(Path(labsim.__file__).parent)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, sim_dir, str(node), str(card)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for card in (3, 1)  # spawned in this order; the plan: rank 0 on card 1, rank 1 on 3
    ]
    try:
        assert all(p.stdout and p.stdout.readline() == "ok\n" for p in procs)
        out = labsim.xpu_smi(["ps", "-j"], {}, str(node))[1]
        rows = json.loads(out)["device_util_by_proc_list"]
        assert list(rows[0]) == [  # the real key order (cmd_ps.cpp to_json)
            "process_id",
            "process_name",
            "device_id",
            "engines",
            "shared_mem_size",
            "mem_size",
        ]
        assert {r["device_id"] for r in rows if r["process_name"] == "xpu-smi"} == {0, 1, 2, 3}
        usage = supervisor.parse_xpu_smi_ps(out)
        pids = [p.pid for p in procs]
        mapping, _, problem = supervisor.ranks_by_device(pids, usage, {0: 1, 1: 3})
        assert (mapping, problem) == ({1: pids[0], 0: pids[1]}, None)
        # a plan the processes did not follow: the card they are on is named
        _, _, problem = supervisor.ranks_by_device(pids, usage, {0: 1, 1: 2})
        assert (
            problem
            and f"device 3: the plan puts no rank there, xpu-smi ps shows "
            f"scheduler pid(s) {pids[0]}"
            in problem
        )
        table = labsim.xpu_smi(["ps", "-d", "3"], {}, str(node))[1]
        assert table.splitlines()[0].split() == ["PID", "Command", "DeviceID", "SHR", "MEM"]
        comm = Path(f"/proc/{pids[0]}/comm").read_text().strip()
        assert table.splitlines()[1].split()[:3] == [str(pids[0]), comm, "3"]
    finally:
        for p in procs:
            p.communicate("")
    # processes that are gone are gone from xpu-smi ps too
    rows = json.loads(labsim.xpu_smi(["ps", "-j"], {}, str(node))[1])["device_util_by_proc_list"]
    assert {r["process_name"] for r in rows} == {"xpu-smi"}

"""Node checks on facts built from real tools' output: a healthy node passes every
check, and each broken fact fails (or warns about) exactly the check that owns it."""

from __future__ import annotations

import json

import pytest
from doctor_samples import (
    DELETE,
    MISSING,
    expect,
    facts,
    fixture,
    healthy_raw,
    patched,
    sycl_new_format,
    tool,
)

from xpufleet.checks import REGISTRY
from xpufleet.checks.node import node_checks, run_node_checks
from xpufleet.facts.probe_info import Clock
from xpufleet.results import Result


def statuses(raw: dict | None = None, **variables: object) -> dict[str, Result]:
    return {r.id: r for r in run_node_checks(facts(raw), expect(**variables))}


def not_passing(raw: dict | None = None, **variables: object) -> dict[str, str]:
    """Checks that do not pass, less the skip of Ray on an SGLang inventory (every node
    has it; test_healthy_node_passes_every_check and the vLLM tests look at it)."""
    found = {i: r.status for i, r in statuses(raw, **variables).items() if r.status != "pass"}
    if variables.get("engine", "sglang") != "vllm" and found.get("ray.version") == "skip":
        del found["ray.version"]
    return found


def test_healthy_node_passes_every_check() -> None:
    results = run_node_checks(facts(), expect())
    assert len(results) == len(node_checks())
    # Ray is vLLM's alone: an SGLang inventory skips it
    assert [(r.id, r.status) for r in results if r.status != "pass"] == [("ray.version", "skip")]
    assert all(r.runbook is None for r in results)  # links only on warn/fail


def with_ray(version: str | None) -> dict:
    raw = healthy_raw()
    if version is not None:
        raw["env"]["result"]["packages"]["ray"] = version
    return raw


def test_vllm_engine_needs_ray_of_the_forks_requirement_and_vllm() -> None:
    healthy = run_node_checks(facts(with_ray("2.60.0")), expect(engine="vllm"))
    assert [r for r in healthy if r.status != "pass"] == []
    ray = {r.id: r for r in healthy}["ray.version"]
    assert ray.message == (
        "found ray 2.60.0, expected ray>=2.9 in /opt/xpufleet/venv (engine vllm)"
    )
    assert not_passing(with_ray(None), engine="vllm") == {"ray.version": "fail"}
    old = statuses(with_ray("2.5.1"), engine="vllm")["ray.version"]
    assert old.status == "fail" and old.message.startswith("found ray 2.5.1, expected ray>=2.9")
    assert old.runbook == "docs/runbooks/doctor.md#rayversion"
    pinned = not_passing(with_ray("2.60.0"), engine="vllm", ray_requirement="ray==2.61.0")
    assert pinned == {"ray.version": "fail"}
    # vLLM is required with engine vllm even when `stack` leaves it out
    raw = with_ray("2.60.0")
    del raw["env"]["result"]["packages"]["vllm"]
    found = not_passing(raw, engine="vllm", stack=["torch", "triton", "sglang"])
    assert found == {"vllm.version": "fail"}
    assert not_passing(raw, stack=["torch", "triton", "sglang"]) == {"vllm.version": "skip"}


def test_vllm_engine_wants_vllms_and_rays_fixed_ports_free() -> None:
    assert expect().ports == (29500, 30000)
    assert expect(engine="vllm").ports == (6379, 8000, 8265, 10001, 52365)
    assert expect(engine="vllm", ray_port=6380, ray_ports=[], vllm_port=8001).ports == (
        6380,
        8001,
    )
    holder = {"pid": 99, "comm": "gcs_server", "cmdline": "gcs_server --gcs_server_port=6379"}
    holder.update(same_ns=True, path="")
    gcs = {"addr": "10.0.0.1", "port": 6379, "inode": "7", "pids": [holder]}
    stale = statuses(patched(**{"busy.listen": [gcs]}), engine="vllm")["proc.ports"]
    assert stale.status == "fail"
    assert "10.0.0.1:6379 held by pid 99 (gcs_server --gcs_server_port=6379)" in stale.message
    assert "expected ports 6379, 8000, 8265, 10001, 52365 free" in stale.message
    # an SGLang inventory does not care about a Ray on 6379
    assert statuses(patched(**{"busy.listen": [gcs]}))["proc.ports"].status == "pass"


def test_every_result_says_what_was_found_and_expected() -> None:
    for item in run_node_checks(facts(), expect()):
        assert "expected" in item.message or "agree" in item.message, item


def test_no_driver() -> None:
    raw = healthy_raw()
    raw["modules"]["i915"]["present"] = False
    for card in raw["drm"]:
        card["uevent"] = card["uevent"].replace("DRIVER=i915\n", "")
    found = statuses(raw)
    assert found["gpu.driver"].status == "fail"
    assert "no i915 or xe kernel module" in found["gpu.driver"].message
    assert found["gpu.driver"].runbook == "docs/runbooks/doctor.md#gpudriver"


def test_cards_without_driver_are_named() -> None:
    raw = healthy_raw()
    raw["drm"][2]["uevent"] = raw["drm"][2]["uevent"].replace("DRIVER=i915\n", "")
    result = statuses(raw)["gpu.driver"]
    assert result.status == "fail" and "card2" in result.message


def test_level_zero_and_opencl_runtime() -> None:
    raw = patched(**{"packages.dpkg": tool("", rc=1), "opencl_icds": {}})
    raw["gpu_tools"]["sycl_ls"] = tool("")
    found = statuses(raw)
    assert found["gpu.level_zero"].status == "fail"
    assert "missing level-zero, intel-level-zero-gpu" in found["gpu.level_zero"].message
    assert found["gpu.opencl"].status == "warn"
    # a runtime installed outside the package manager still shows in sycl-ls
    raw = patched(**{"packages.dpkg": tool("", rc=1)})
    assert statuses(raw)["gpu.level_zero"].status == "pass"


def test_missing_xpu_smi_warns_and_skips_its_device_check() -> None:
    raw = healthy_raw()
    raw["gpu_tools"].update(
        xpu_smi_version=MISSING, xpu_smi_discovery=MISSING, xpu_smi_discovery_json=MISSING
    )
    raw["gpu_tools"]["paths"]["xpu-smi"] = None
    assert not_passing(raw) == {"gpu.xpu_smi": "warn", "gpu.devices.xpu_smi": "skip"}


def test_unknown_output_formats_are_reported_as_such_not_as_no_gpu() -> None:
    raw = healthy_raw()
    raw["gpu_tools"]["xpu_smi_discovery"] = tool("GPU 0: something new\nGPU 1: ...\n")
    raw["gpu_tools"]["sycl_ls"] = tool("Device 0 (level zero): Max 1550\n")
    raw["gpu_tools"]["xpu_smi_version"] = tool("xpu-smi 9.0 (c) Intel\n")
    found = statuses(raw)
    for check_id in ("gpu.devices.xpu_smi", "gpu.devices.sycl", "gpu.xpu_smi"):
        assert found[check_id].status == "warn", found[check_id]
        assert "unknown format" in found[check_id].message
    assert "no GPU" not in found["gpu.devices.sycl"].message


def test_fewer_cards_than_the_inventory() -> None:
    found = statuses(cards=8, tiles=16)
    assert found["gpu.devices.xpu_smi"].status == "fail"
    assert "found 6 x Data Center GPU Max 1550" in found["gpu.devices.xpu_smi"].message
    assert found["gpu.devices.sycl"].status == "fail"
    assert found["gpu.devices.agree"].status == "fail"


def test_wrong_gpu_model() -> None:
    found = not_passing(gpu_model="max1100")
    assert found["gpu.devices.xpu_smi"] == "fail"
    assert found["gpu.devices.sycl"] == "fail"


def test_composite_mode_seen_where_flat_is_expected() -> None:
    raw = healthy_raw()
    raw["gpu_tools"]["sycl_ls"] = tool(sycl_new_format(6))
    result = statuses(raw)["gpu.devices.sycl"]
    assert result.status == "fail" and "(COMPOSITE)" in result.message
    # and where COMPOSITE is what the inventory asks for, 6 devices are right
    raw["env"]["result"]["torch"]["device_count"] = 6
    raw["env"]["result"]["torch"]["devices"] = [
        {"name": "Max 1550", "total_memory": 131040 << 20}
    ] * 6
    assert not_passing(raw, device_hierarchy="COMPOSITE") == {}


def test_old_sycl_ls_format_of_four_max_1550_in_flat_mode() -> None:
    raw = healthy_raw()
    raw["gpu_tools"]["sycl_ls"] = tool(fixture("07f"))
    raw["gpu_tools"]["xpu_smi_discovery"] = tool("")
    raw["gpu_tools"]["xpu_smi_discovery_json"] = tool(
        json.dumps(
            {
                "device_list": [
                    {
                        "device_id": i,
                        "device_name": "Intel(R) Data Center GPU Max 1550",
                        "pci_device_id": "0xbd5",
                    }
                    for i in range(4)
                ]
            }
        )
    )
    raw["drm"] = raw["drm"][:4]
    raw["env"]["result"]["torch"]["device_count"] = 8
    found = statuses(raw, cards=4, tiles=8)
    assert found["gpu.devices.sycl"].status == "pass"
    assert "[old format] (FLAT)" in found["gpu.devices.sycl"].message
    assert found["gpu.devices.xpu_smi"].status == "pass"
    assert found["gpu.devices.agree"].status == "pass"


def test_torch_disagrees_with_sycl_ls() -> None:
    raw = healthy_raw()
    raw["env"]["result"]["torch"]["device_count"] = 8
    assert not_passing(raw) == {"gpu.devices.agree": "fail", "torch.xpu": "fail"}


@pytest.mark.parametrize(
    ("change", "check_id"),
    [
        ({"oneapi.unified": {"2024.0": True}}, "oneapi.version"),
        ({"oneapi.setvars": False}, "oneapi.version"),
        ({"oneapi.components": {}, "oneapi.unified": {"2025.0": True}}, "oneapi.ccl"),
    ],
)
def test_oneapi(change: dict, check_id: str) -> None:
    assert not_passing(patched(**change)) == {check_id: "fail"}


def test_old_oneapi_fails_toolkit_and_ccl() -> None:
    raw = patched(
        **{
            "oneapi.unified": {},
            "oneapi.components": {
                "compiler": {"latest": "2024.0", "latest_exists": True, "versions": ["2024.0"]},
                "ccl": {"latest": "2021.11", "latest_exists": True, "versions": ["2021.11"]},
            },
        }
    )
    found = statuses(raw)
    assert found["oneapi.version"].status == "fail"
    assert "found oneAPI 2024.0" in found["oneapi.version"].message
    assert "expected oneAPI >= 2025.0" in found["oneapi.version"].message
    assert found["oneapi.ccl"].status == "fail"


def test_no_oneapi_at_all() -> None:
    found = not_passing(patched(**{"oneapi.exists": False}))
    assert found["oneapi.version"] == "fail" and found["oneapi.ccl"] == "fail"


def test_python_and_pins() -> None:
    raw = healthy_raw()
    raw["env"]["result"]["python"] = "3.9.18"
    raw["env"]["result"]["packages"]["setuptools"] = "70.0.0"
    del raw["env"]["result"]["packages"]["gguf"]
    found = statuses(raw)
    assert found["python.version"].status == "fail"
    pins = found["python.pins"]
    assert pins.status == "fail"
    assert (
        "missing gguf" in pins.message
        and "setuptools 70.0.0 (wants setuptools==75.6.0)" in pins.message
    )


def test_before_provision_the_environment_checks_skip() -> None:
    raw = patched(**{"env": {"venv": "/opt/xpufleet/venv", "exists": False, "present": False}})
    found = not_passing(raw)
    skipped = {
        "python.pins",
        "torch.version",
        "torch.xpu",
        "torch.xccl",
        "triton.xpu",
        "vllm.version",
        "sglang.version",
        "python.imports",
    }
    assert found == {k: "skip" for k in skipped}
    message = statuses(raw)["torch.version"].message
    assert "absent (not provisioned yet)" in message


def test_a_broken_environment_fails() -> None:
    raw = patched(**{"env.result": DELETE, "env.error": "Illegal instruction (core dumped)"})
    found = statuses(raw)
    assert found["torch.version"].status == "fail"
    assert "Illegal instruction" in found["torch.version"].message


def test_torch_without_xccl_and_without_xpu() -> None:
    raw = healthy_raw()
    raw["env"]["result"]["torch"]["xccl"] = False
    assert not_passing(raw) == {"torch.xccl": "fail"}
    raw["env"]["result"]["torch"].update(xpu_available=False, device_count=0, devices=[])
    found = not_passing(raw)
    assert found["torch.xpu"] == "fail" and found["torch.xccl"] == "fail"


def test_old_torch_and_missing_packages() -> None:
    raw = healthy_raw()
    raw["env"]["result"]["torch"]["version"] = "2.5.1+xpu"
    for name in ("pytorch-triton-xpu", "vllm", "sglang"):
        del raw["env"]["result"]["packages"][name]
    assert not_passing(raw) == {
        "torch.version": "fail",
        "triton.xpu": "fail",
        "vllm.version": "fail",
        "sglang.version": "fail",
    }


def test_nic() -> None:
    assert not_passing(patched(**{"nic.exists": False}))["net.nic"] == "fail"
    wrong = patched(
        **{"nic.ip_json": json.dumps([{"addr_info": [{"local": "10.0.1.1", "prefixlen": 24}]}])}
    )
    assert not_passing(wrong)["net.nic"] == "fail"
    assert not_passing(nic=None) == {"net.nic": "warn"}


def test_lab_loopback_nic_carries_the_node_address() -> None:
    raw = patched(
        **{
            "nic.name": "lo",
            "nic.ip_json": json.dumps([{"addr_info": [{"local": "127.0.0.1", "prefixlen": 8}]}]),
            "resolve.hostname": {"addresses": ["127.0.2.3"]},
            "resolve.address": {"addresses": ["127.0.2.3"]},
        }
    )
    from doctor_samples import host

    from xpufleet.checks.node import Expect

    lab = Expect.from_host(host("node3", "127.0.2.3", nic="lo"), host("node1", "127.0.2.1"))
    found = {r.id: r.status for r in run_node_checks(facts(raw), lab)}
    assert found["net.nic"] == "pass" and found["net.hostname"] == "pass"


def test_hostname_resolving_to_debian_loopback() -> None:
    raw = patched(**{"resolve.hostname": {"addresses": ["127.0.1.1"]}})
    result = statuses(raw)["net.hostname"]
    assert result.status == "fail"
    assert "127.0.1.1 (loopback, not this node's address)" in result.message
    unresolved = patched(**{"resolve.hostname": {"addresses": [], "error": "Name unknown"}})
    assert statuses(unresolved)["net.hostname"].status == "warn"


def test_disk_memory_clock() -> None:
    assert not_passing(patched(**{"disk.free": 1 << 20})) == {"disk.model": "fail"}
    assert not_passing(patched(meminfo="MemTotal: 8000000 kB\nMemAvailable: 4000000 kB\n")) == {
        "mem.free": "fail"
    }
    skewed = statuses(patched(clock={"start": 1300.1, "elapsed": 0.1}))["clock.offset"]
    assert skewed.status == "fail" and "found +300.050 s" in skewed.message
    # a slow round trip leaves too much doubt to fail or pass a 1 s limit
    slow = statuses(patched(clock={"start": 1001.0, "elapsed": 0.0}))["clock.offset"]
    assert slow.status == "pass"
    doubtful = facts()
    doubtful.clock = Clock(offset=0.9, uncertainty=0.5)
    found = {r.id: r for r in run_node_checks(doubtful, expect())}
    assert found["clock.offset"].status == "warn"
    assert "too uncertain" in found["clock.offset"].message


def test_leftover_processes() -> None:
    holder = {
        "pid": 4242,
        "comm": "python3",
        "cmdline": "python3 -m sglang.launch_server",
        "same_ns": True,
        "path": "/dev/dri/renderD128",
    }
    daemon = dict(holder, pid=17, comm="xpumd", cmdline="/usr/bin/xpumd")
    raw = patched(**{"busy.dri": [holder, daemon]})
    result = statuses(raw)["proc.gpu"]
    assert (
        result.status == "fail" and "pid 4242" in result.message and "pid 17" not in result.message
    )
    listen = {"addr": "10.0.0.1", "port": 30000, "inode": "1", "pids": [holder]}
    result = statuses(patched(**{"busy.listen": [listen]}))["proc.ports"]
    assert result.status == "fail" and "10.0.0.1:30000 held by pid 4242" in result.message
    # a wildcard listener of another node that shares this network namespace (the lab)
    other = dict(listen, addr="::", pids=[dict(holder, same_ns=False)])
    assert statuses(patched(**{"busy.listen": [other]}))["proc.ports"].status == "pass"
    mine = dict(listen, addr="0.0.0.0", pids=[holder])
    assert statuses(patched(**{"busy.listen": [mine]}))["proc.ports"].status == "fail"
    # another node's own address is not ours
    theirs = dict(listen, addr="10.0.0.2")
    assert statuses(patched(**{"busy.listen": [theirs]}))["proc.ports"].status == "pass"


def test_lab_nodes_mark_simulated_facts() -> None:
    raw = patched(
        lab={"lab": True, "simulated": ["xpu-smi", "sycl-ls", "/sys/class/drm", "/sys/module/i915"]}
    )
    found = statuses(raw)
    assert found["gpu.driver"].message.endswith("(simulated)")
    assert found["gpu.driver"].data["simulated"] is True
    assert not found["mem.free"].message.endswith("(simulated)")
    assert not found["oneapi.version"].message.endswith("(simulated)")


def test_one_broken_fact_does_not_stop_the_other_checks() -> None:
    raw = patched(**{"env.result.torch.devices": [{"name": "x", "total_memory": "lots"}]})
    results = run_node_checks(facts(raw), expect())
    assert len(results) == len(node_checks())
    crashed = [r for r in results if r.status == "fail"]
    # filed under the check that crashed, with its runbook section, not under doctor.probe
    assert len(crashed) == 1 and crashed[0].id == "torch.xpu"
    assert "check_torch_xpu crashed" in crashed[0].message
    assert crashed[0].runbook == "docs/runbooks/doctor.md#torchxpu"
    # all the others pass (Ray skips: an SGLang inventory)
    assert sum(r.status == "pass" for r in results) == len(node_checks()) - 2


def test_a_crashing_check_is_reported_under_its_own_id() -> None:
    """Any check that raises: its own id, a failure naming the function, the rest run."""
    from xpufleet.checks import NODE_CHECKS, NodeCheck
    from xpufleet.checks.gpu import check_opencl

    def broken(facts: object, expect: object) -> object:
        raise RuntimeError("boom")

    broken.__module__ = check_opencl.func.__module__
    index = NODE_CHECKS.index(check_opencl)
    NODE_CHECKS[index] = NodeCheck(check_opencl.id, broken)
    try:
        results = {r.id: r for r in run_node_checks(facts(healthy_raw()), expect())}
    finally:
        NODE_CHECKS[index] = check_opencl
    assert results["gpu.opencl"].status == "fail"
    assert results["gpu.opencl"].message == "broken crashed: RuntimeError('boom')"
    assert results["doctor.probe"].status == "pass"
    assert len(results) == len(node_checks())


def test_every_node_check_lives_in_an_area_and_ids_are_unique() -> None:
    from xpufleet.checks.node import AREAS

    checks = node_checks()
    assert len({c.id for c in checks}) == len(checks)
    areas = {area.__name__ for area in AREAS}
    assert {c.func.__module__ for c in checks} <= areas
    assert checks[0].id == "doctor.probe"


def test_probe_errors_are_shown() -> None:
    raw = healthy_raw()
    raw["probe"]["errors"] = ["env: OSError: [Errno 22] Invalid argument"]
    raw["env"] = {"probe_error": "OSError: [Errno 22] Invalid argument"}
    found = statuses(raw)
    assert found["doctor.probe"].status == "warn"
    assert "Errno 22" in found["doctor.probe"].message
    # the environment is not mistaken for "not provisioned yet"
    assert found["torch.version"].status == "fail"
    assert "the probe could not run it" in found["torch.version"].message


def test_every_emitted_id_is_registered() -> None:
    seen = {r.id for r in run_node_checks(facts(), expect())}
    assert seen <= set(REGISTRY)

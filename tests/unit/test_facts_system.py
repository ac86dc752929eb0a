"""Small system facts: versions, meminfo, interface addresses, the oneAPI layout, clock."""

from __future__ import annotations

import json

from doctor_samples import facts, healthy_raw

from xpufleet.facts.node import parse_facts
from xpufleet.facts.system import (
    InterfaceAddress,
    parse_ip_json,
    parse_ip_text,
    parse_meminfo,
    parse_oneapi,
)
from xpufleet.facts.versions import at_least, version_tuple


def test_versions() -> None:
    assert version_tuple("2.8.0.dev20250516+xpu") == (2, 8)
    assert version_tuple("2.10.0a0+git449b176") == (2, 10)
    assert at_least("2025.0.1", "2025.0")
    assert at_least("2.7.0+xpu", "2.7")
    assert not at_least("2024.2", "2025.0")
    assert not at_least("3.9.18", "3.10")
    assert at_least("garbage", "1.0") is None


def test_meminfo() -> None:
    memory = parse_meminfo("MemTotal: 2048 kB\nMemFree: 10 kB\nMemAvailable: 1024 kB\n")
    assert memory is not None and (memory.total_kb, memory.available_kb) == (2048, 1024)
    assert parse_meminfo("") is None


def test_ip_addresses_and_what_an_interface_carries() -> None:
    doc = [{"ifname": "lo", "addr_info": [{"local": "127.0.0.1", "prefixlen": 8}]}]
    (lo,) = parse_ip_json(json.dumps(doc))
    assert lo.carries("127.0.0.1", loopback_interface=True)
    # lo answers for all of 127/8: the lab's node addresses live there
    assert lo.carries("127.0.2.3", loopback_interface=True)
    assert not lo.carries("10.0.0.1", loopback_interface=True)
    text = "2: eth0    inet 10.0.0.5/24 brd 10.0.0.255 scope global eth0\\n"
    (eth,) = parse_ip_text(text)
    assert eth == InterfaceAddress("10.0.0.5", 24)
    # a real NIC carries only its own address, not its whole subnet
    assert not eth.carries("10.0.0.6", loopback_interface=False)
    assert eth.carries("10.0.0.5", loopback_interface=False)


def test_oneapi_unified_and_component_layouts() -> None:
    unified = parse_oneapi(
        {
            "root": "/opt/intel/oneapi",
            "exists": True,
            "setvars": True,
            "components": {"ccl": {"latest": "2021.15", "latest_exists": True, "versions": []}},
            "unified": {"2024.2": True, "2025.1": True, "2025.2": False},
        }
    )
    assert unified is not None
    assert (unified.version, unified.ccl_version) == ("2025.1", "2021.15")
    assert unified.version_source == "/opt/intel/oneapi/2025.1/oneapi-vars.sh"
    components = parse_oneapi(
        {
            "root": "/opt/intel/oneapi",
            "exists": True,
            "setvars": True,
            "components": {
                "compiler": {"latest": "2024.0", "latest_exists": True, "versions": ["2024.0"]},
                # a dangling latest link: the newest version directory counts
                "ccl": {
                    "latest": "2021.99",
                    "latest_exists": False,
                    "versions": ["2021.9", "2021.11"],
                },
            },
        }
    )
    assert components is not None
    assert (components.version, components.ccl_version) == ("2024.0", "2021.11")


def test_clock_offset_is_taken_at_the_midpoint_of_the_overhead() -> None:
    raw = healthy_raw()
    raw["clock"] = {"start": 1300.5, "elapsed": 2.0}
    found = parse_facts("node1", raw, sent=1000.0, received=1003.0)
    assert found.clock is not None
    # 3 s round trip, 2 s of it the probe itself: the probe started 0.5 s after sending
    assert abs(found.clock.offset - 300.0) < 1e-9
    assert abs(found.clock.uncertainty - 0.5) < 1e-9


def test_lab_marker_and_missing_sections() -> None:
    raw = healthy_raw()
    raw["lab"] = {
        "lab": True,
        "simulated": [
            "xpu-smi",
            "/sys/class/drm",
            "/sys/module/xe",
            "/opt/intel/oneapi",
            "dpkg:level-zero",
            "torch.xpu",
            "something-new",
        ],
    }
    assert parse_facts("n", raw).simulated == frozenset(
        {"xpu-smi", "drm", "kernel_module", "oneapi", "packages", "torch", "something-new"}
    )
    assert facts().simulated is None
    # a probe answer with almost nothing in it still parses (absent facts stay absent)
    bare = parse_facts("n", {"probe": {"kind": "python"}})
    assert bare.drm == [] and bare.oneapi is None and bare.env.present is False
    assert bare.tools.discovery is None and bare.wheels is None

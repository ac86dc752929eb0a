"""Raw probe documents for doctor's unit tests: a healthy Max 1550 node built from the
real tools' output in tests/fixtures, and helpers to break one fact at a time.

Not a test module: imported by test_checks_node.py and test_checks_cluster.py.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from xpufleet.checks.node import Expect
from xpufleet.facts.node import NodeFacts, parse_facts
from xpufleet.host import Host
from xpufleet.variables import VARIABLES

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

#: fixture 01 is a 6-card Max 1550 node; FLAT mode shows 12 devices
CARDS, TILES = 6, 12
SENT, RECEIVED = 1000.0, 1000.2


def fixture(prefix: str) -> str:
    """A fixture's text by its file-name prefix (the .source.txt sidecars are skipped)."""
    matches = sorted(p for p in FIXTURES.glob(f"{prefix}*") if not p.name.endswith(".source.txt"))
    assert matches, f"no fixture {prefix}*"
    return matches[0].read_text()


def tool(out: str, rc: int = 0) -> dict[str, Any]:
    return {"missing": False, "rc": rc, "out": out, "err": "", "timeout": False}


MISSING = {"missing": True}


def sycl_new_format(count: int, name: str = "Intel(R) Data Center GPU Max 1550") -> str:
    """`sycl-ls` in the new format, lines shaped like fixture 07a's, one per tile."""
    return "".join(
        f"[level_zero:gpu][level_zero:{i}] Intel(R) oneAPI Unified Runtime over Level-Zero, "
        f"{name} 12.60.7 [1.3.26918]\n"
        for i in range(count)
    )


def connect(name: str, address: str, result: str = "refused") -> dict[str, Any]:
    """One TCP connect of the probe to a peer's rendezvous port."""
    return {
        "host": name,
        "address": address,
        "port": 29500,
        "result": result,
        "detail": "connection refused (nothing listening yet)" if result == "refused" else "",
        "seconds": 0.001,
    }


#: DeepSeek-R1's layout on Hugging Face: 163 shards named model-0000k-of-000163
R1_SHARDS = 163
R1_SHARD_BYTES = 4_302_383_320
MTIME = 1_700_000_000_000_000_000


def r1_shard(index: int) -> str:
    return f"model-{index:05d}-of-{R1_SHARDS:06d}.safetensors"


def model_raw(*, manifest: bool = True, source: str = "nfs0:/export/models") -> dict[str, Any]:
    """A DeepSeek-R1 directory as the probe reports it: listing, index, manifest, mount."""
    shards = {r1_shard(i): R1_SHARD_BYTES for i in range(1, R1_SHARDS + 1)}
    small = {
        "config.json": 1_700,
        "tokenizer.json": 7_847_602,
        "tokenizer_config.json": 3_584,
        "model.safetensors.index.json": 8_898_324,
    }
    files = {**small, **shards}
    index = {
        "metadata": {"total_size": 0},
        "weight_map": {f"model.layers.{i}.weight": name for i, name in enumerate(shards)},
    }
    raw: dict[str, Any] = {
        "path": "/models/DeepSeek-R1",
        "exists": True,
        "dir": {"dev": 2049, "ino": 1000},
        "mount": {"point": "/", "root": "/", "fstype": "ext4", "source": "/dev/nvme0n1p2"},
        "files": {name: [size, MTIME] for name, size in files.items()},
        "index_text": json.dumps(index),
        "manifest_text": None,
        "headers": {name: {"expected": size} for name, size in shards.items()},
    }
    if manifest:
        doc = {
            "format": 1,
            "hash": "sha256",
            "files": {
                name: {"size": size, "hash": f"{i:064x}", "mtime_ns": MTIME}
                for i, (name, size) in enumerate(sorted(files.items()))
            },
        }
        raw["manifest_text"] = json.dumps(doc)
        del raw["headers"]
        raw["files"][".xpufleet-manifest.json"] = [len(raw["manifest_text"]), MTIME]
    if source.startswith("nfs"):
        raw["mount"] = {"point": "/models", "root": "/export/models", "fstype": "nfs4",
                        "source": source}  # fmt: skip
    return raw


def healthy_raw() -> dict[str, Any]:
    """What the python probe returns on a healthy, provisioned 6-card Max 1550 node."""
    drm = [
        {
            "card": f"card{i}",
            "vendor": "0x8086",
            "device": "0x0bd5",
            "uevent": "DRIVER=i915\nPCI_CLASS=38000\nPCI_ID=8086:0BD5\n"
            f"PCI_SLOT_NAME=0000:{i:02x}:00.0\n",
        }
        for i in range(CARDS)
    ]
    packages = {
        "wheels": {
            "torch": {"version": "2.7.0a0+gitc21dc11", "sha256": "a" * 64, "filename": "t.whl"},
            "sglang": {"version": "0.4.3.post2", "sha256": "b" * 64, "filename": "s.whl"},
        },
        "format": 1,
    }
    return {
        "probe": {"kind": "python", "schema": 1, "errors": []},
        "python": {"version": "3.11.2", "executable": "/usr/bin/python3"},
        "hostname": "node1",
        "resolve": {
            "hostname": {"addresses": ["10.0.0.1"]},
            "address": {"addresses": ["10.0.0.1"]},
        },
        "lab": None,
        "drm": drm,
        "modules": {
            "i915": {"present": True, "version": "1.23.10.54.231129.55", "modinfo_version": None},
            "xe": {"present": False, "version": None},
        },
        "opencl_icds": {"intel.icd": "libigdrcl.so"},
        "packages": {
            "dpkg": tool(
                fixture("12b").replace("Check Intel GPU Driver\n", "")
                + "\nPackage: level-zero\nStatus: install ok installed\n"
                "Version: 1.20.2\n",
                rc=0,
            )
        },
        "gpu_tools": {
            "xpu_smi_version": tool(fixture("04_")),
            "xpu_smi_discovery_json": tool("", rc=1),
            "xpu_smi_discovery": tool(fixture("01_")),
            "sycl_ls": tool(sycl_new_format(TILES)),
            "paths": {"xpu-smi": "/usr/bin/xpu-smi", "sycl-ls": "/opt/bin/sycl-ls"},
        },
        "oneapi": {
            "root": "/opt/intel/oneapi",
            "exists": True,
            "setvars": True,
            "components": {
                "ccl": {"latest": "2021.14", "latest_exists": True, "versions": ["2021.14"]},
                "compiler": {"latest": "2025.0", "latest_exists": True, "versions": ["2025.0"]},
            },
            "unified": {"2025.0": True},
        },
        "meminfo": "MemTotal:       1056000000 kB\nMemFree:  900000000 kB\n"
        "MemAvailable:   1000000000 kB\n",
        "model": model_raw(),
        "disk": {
            "path": "/models/DeepSeek-R1",
            "checked": "/models",
            "free": 2000 * (1 << 30),
            "total": 4000 * (1 << 30),
            "exists": False,
        },
        "nic": {
            "name": "eth0",
            "exists": True,
            "ip_json": json.dumps(
                [
                    {
                        "ifname": "eth0",
                        "addr_info": [{"family": "inet", "local": "10.0.0.1", "prefixlen": 24}],
                    }
                ]
            ),
        },
        "wheels_text": json.dumps(packages),
        "busy": {"dri": [], "listen": [], "complete": True},
        "env": {
            "venv": "/opt/xpufleet/venv",
            "exists": True,
            "present": True,
            "python": "/opt/xpufleet/venv/bin/python",
            "result": {
                "python": "3.10.14",
                "packages": {
                    "torch": "2.7.0a0+gitc21dc11",
                    "pytorch-triton-xpu": "3.2.0+git6fa2562b",
                    "vllm": "0.7.3+xpu",
                    "sglang": "0.4.3.post2",
                    "setuptools": "75.6.0",
                    "packaging": "24.2",
                    "msgspec": "0.19.0",
                    "blake3": "1.0.4",
                    "py-cpuinfo": "9.0.0",
                    "compressed-tensors": "0.9.1",
                    "gguf": "0.10.0",
                    "partial-json-parser": "0.2.1.1.post5",
                },
                "torch": {
                    "version": "2.7.0a0+gitc21dc11",
                    "xpu_built": True,
                    "xpu_version": "20250101",
                    "xpu_available": True,
                    "device_count": TILES,
                    "devices": [
                        {"name": "Intel(R) Data Center GPU Max 1550", "total_memory": 65520 << 20}
                    ]
                    * TILES,
                    "xccl": True,
                },
                "sqlite": "3.40.1",
                "imports": {"ok": list(VARIABLES["python_imports"].default), "failed": None},
                "triton": {"version": "3.2.0+git6fa2562b", "intel_backend": True},
            },
        },
        "rendezvous": [connect(f"node{i}", f"10.0.0.{i}") for i in range(1, 5)],
        "clock": {"start": 1000.1, "elapsed": 0.1},
        "access": {
            "uid": 0,
            "user": "root",
            "become": False,
            "fi_provider": "tcp",
            "render_nodes": [
                {"path": f"/dev/dri/renderD{128 + n}", "group": "render", "mode": 0o660, "rw": True}
                for n in range(4)
            ],
            "memlock": [-1, -1],
            "paths": {
                "install_dir": {"path": "/opt/xpufleet", "checked": "/opt", "writable": True}
            },
        },
        "kernel": {"release": "5.15.0-91-generic", "ptrace_scope": "1\n", "uid": 0},
        "fabric": {
            "tool": "/opt/intel/oneapi/mpi/latest/opt/mpi/libfabric/bin/fi_info",
            "run": {"rc": 0, "out": fixture("15b_fi_info_l_libfabric_1.19.0amzn_tcp_PARTIAL.txt")},
        },
    }


def host(name: str = "node1", address: str = "10.0.0.1", **variables: Any) -> Host:
    merged = {"cards": CARDS, "tiles": TILES, "nic": "eth0", **variables}
    return Host(name=name, address=address, vars=merged)


def expect(**variables: Any) -> Expect:
    return Expect.from_host(host(**variables), host())


def facts(raw: dict[str, Any] | None = None, name: str = "node1") -> NodeFacts:
    return parse_facts(
        name, raw if raw is not None else healthy_raw(), sent=SENT, received=RECEIVED
    )


def patched(**changes: Any) -> dict[str, Any]:
    """healthy_raw() with dotted keys replaced: patched(**{"env.present": False})."""
    raw = copy.deepcopy(healthy_raw())
    for dotted, value in changes.items():
        target = raw
        *path, last = dotted.split(".")
        for key in path:
            target = target[key]
        if value is DELETE:
            target.pop(last, None)
        else:
            target[last] = value
    return raw


DELETE = object()

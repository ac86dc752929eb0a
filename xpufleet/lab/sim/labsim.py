"""The simulated Intel GPU tools of a lab node: xpu-smi, sycl-ls and a torch.xpu patch.

This file runs ON a lab node with /usr/bin/python3 and the standard library only:
the lab copies it as `xpufleet_lab_sim.py` next to the node's `xpu-smi`/`sycl-ls`
launchers and into the lab's base Python environment (for torch). It is the lab's
simulation, never part of xpufleet's own code paths.

What a tool reports is derived from the node's state, so OS-level faults show up the
way they would on real hardware:
- the hardware description: /opt/intel/.lab/node.json (written by `lab.up`);
- which cards the kernel exposes: /sys/class/drm/card<N>/device/uevent and
  /sys/module/<driver> (the no-driver fault removes them);
- the oneAPI release: /opt/intel/oneapi/compiler/latest (decides the sycl-ls format);
- ZE_FLAT_DEVICE_HIERARCHY and ZE_AFFINITY_MASK, like Level Zero;
- which process works on which card: /opt/intel/.lab-xpu-procs/<pid>.json, written by
  the simulated torch.xpu.set_device of that process (what `xpu-smi ps` lists).
Output formats follow the real tools' samples in tests/fixtures (01, 03, 04, 05a, 07a, 07b,
10a).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import Any

LAB_DIR = "/opt/intel/.lab"
NODE_JSON = "node.json"
TORCH_JSON = "torch.json"
#: one file per process that selected a device (world-writable, sticky: ranks of any user;
#: beside LAB_DIR, which lab.up and the faults rewrite and prune)
PROCS_DIR = "/opt/intel/.lab-xpu-procs"
#: device memory (kB) a rank holds in the lab's `xpu-smi ps`; xpu-smi's own rows hold less
RANK_MEM_KB = 1_048_576
SELF_MEM_KB = 2_048
VENDOR = "Intel(R) Corporation"

#: (first column, second column) inner widths of xpu-smi's tables (fixtures 01, 05a)
DISCOVERY_WIDTHS = (11, 86)
PRECHECK_WIDTHS = (18, 79)
#: known build ids of xpu-smi releases (fixtures 04, 04c); others get a stable made-up id
BUILD_IDS = {"1.2.39.20240906": "11f3c29a", "1.0.0.20211217": "f847c0fa"}


# -- node state -------------------------------------------------------------------------
def _path(root: str, *parts: str) -> str:
    return os.path.join(root, *[p.lstrip("/") for p in parts])


def load_node(root: str = "/") -> dict[str, Any] | None:
    """The node's description, or None on a machine that is not a lab node."""
    try:
        with open(_path(root, LAB_DIR, NODE_JSON)) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def present_cards(node: dict[str, Any], root: str = "/") -> list[dict[str, Any]]:
    """Cards the kernel exposes: driver module loaded and a drm entry per card."""
    hw = node["hardware"]
    if not os.path.isdir(_path(root, "/sys/module", hw["driver"])):
        return []
    return [
        card
        for card in hw["cards"]
        if os.path.exists(_path(root, f"/sys/class/drm/card{card['index']}/device/uevent"))
    ]


def hierarchy(node: dict[str, Any], env: dict[str, str]) -> str:
    """Level Zero's device hierarchy: the environment wins over the node's default."""
    value = env.get("ZE_FLAT_DEVICE_HIERARCHY", "").strip().upper()
    if value in ("FLAT", "COMPOSITE"):
        return value
    if value == "COMBINED":
        return "FLAT"
    return str(node["hardware"].get("hierarchy", "FLAT"))


def devices(
    node: dict[str, Any], env: dict[str, str], root: str = "/"
) -> list[tuple[dict[str, Any], int | None]]:
    """Visible devices as (card, tile) pairs: one per tile in FLAT, per card in COMPOSITE.

    ZE_AFFINITY_MASK keeps the listed devices ("0,3" or "card.tile" entries).
    """
    hw = node["hardware"]
    cards = present_cards(node, root)
    tiles = int(hw["tiles_per_card"])
    if hierarchy(node, env) == "FLAT":
        listed: list[tuple[dict[str, Any], int | None]] = [
            (card, t) for card in cards for t in range(tiles)
        ]
    else:
        listed = [(card, None) for card in cards]
    mask = env.get("ZE_AFFINITY_MASK", "").strip()
    if not mask:
        return listed
    kept: list[tuple[dict[str, Any], int | None]] = []
    for entry in mask.split(","):
        entry = entry.strip()
        if entry.isdigit() and int(entry) < len(listed):
            kept.append(listed[int(entry)])
        elif "." in entry:
            card_no, _, tile_no = entry.partition(".")
            if card_no.isdigit() and tile_no.isdigit() and int(card_no) < len(cards):
                if int(tile_no) < tiles:
                    kept.append((cards[int(card_no)], int(tile_no)))
    return kept


def oneapi_compiler_version(root: str = "/") -> str | None:
    """The release `/opt/intel/oneapi/compiler/latest` points at (None if absent)."""
    try:
        return os.path.basename(os.readlink(_path(root, "/opt/intel/oneapi/compiler/latest")))
    except OSError:
        return None


def _version_tuple(version: str | None) -> tuple[int, ...]:
    parts = []
    for piece in (version or "0").split("."):
        parts.append(int(piece) if piece.isdigit() else 0)
    return tuple(parts)


def cpu_model(root: str = "/") -> str:
    try:
        with open(_path(root, "/proc/cpuinfo")) as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "Intel(R) Xeon(R) Platinum 8480+"


# -- xpu-smi ------------------------------------------------------------------------------
def _table(widths: tuple[int, int], rows: list[tuple[list[str], list[str]]]) -> str:
    """xpu-smi's box table: each row is (first-column lines, second-column lines)."""
    rule = "+" + "-" * widths[0] + "+" + "-" * widths[1] + "+"
    out = [rule]
    for left, right in rows:
        height = max(len(left), len(right))
        for i in range(height):
            a = left[i] if i < len(left) else ""
            b = right[i] if i < len(right) else ""
            out.append(f"| {a.ljust(widths[0] - 2)} | {b.ljust(widths[1] - 2)} |")
        out.append(rule)
    return "\n".join(out) + "\n"


def _card_fields(hw: dict[str, Any], card: dict[str, Any]) -> dict[str, str]:
    return {
        "device_id": str(card["index"]),
        "device_name": hw["name"],
        "device_type": "GPU",
        "device_function_type": "physical",
        "drm_device": f"/dev/dri/card{card['index']}",
        "pci_bdf_address": card["bdf"],
        "pci_device_id": hex(int(hw["pci_device_id"], 16)),
        "uuid": card["uuid"],
        "vendor_name": VENDOR,
    }


def discovery_table(hw: dict[str, Any], cards: list[dict[str, Any]]) -> str:
    if not cards:
        return "No device discovered\n"
    rows: list[tuple[list[str], list[str]]] = [(["Device ID"], ["Device Information"])]
    for card in cards:
        rows.append(
            (
                [str(card["index"])],
                [
                    f"Device Name: {hw['name']}",
                    f"Vendor Name: {VENDOR}",
                    f"SOC UUID: {card['soc_uuid']}",
                    f"PCI BDF Address: {card['bdf']}",
                    f"DRM Device: /dev/dri/card{card['index']}",
                    "Function Type: physical",
                ],
            )
        )
    return _table(DISCOVERY_WIDTHS, rows) + "\n"


def discovery_json(hw: dict[str, Any], cards: list[dict[str, Any]]) -> dict[str, Any]:
    device_list = []
    for card in cards:
        fields: dict[str, Any] = _card_fields(hw, card)
        fields["device_id"] = card["index"]
        device_list.append(dict(sorted(fields.items())))
    return {"device_list": device_list}


def detail_fields(hw: dict[str, Any], card: dict[str, Any], kernel: str) -> dict[str, str]:
    """`discovery -d N -j` keys (fixture 02e naming, all values strings)."""
    tiles = int(hw["tiles_per_card"])
    eus = int(hw["eus_per_tile"]) * tiles
    fields = _card_fields(hw, card)
    fields.update(
        {
            "serial_number": "unknown",
            "core_clock_rate_mhz": "1600",
            "driver_version": hw["driver_version"],
            "kernel_version": kernel,
            "gfx_firmware_name": "GFX",
            "gfx_firmware_version": "PVC2_1.23263",
            "pci_slot": f"Slot {card['index'] + 1}",
            "pcie_generation": "5",
            "pcie_max_link_width": "16",
            "pci_vendor_id": "0x8086",
            "memory_physical_size_byte": str(int(hw["memory_physical_mib"]) * 1048576),
            "memory_ecc_state": "enabled",
            "number_of_memory_channels": "2",
            "memory_bus_width": "8192",
            "number_of_tiles": str(tiles),
            "number_of_eus": str(eus),
            "number_of_slices": str(tiles),
            "number_of_sub_slices_per_slice": str(eus // tiles // 8),
            "number_of_threads_per_eu": "8",
            "physical_eu_simd_width": "16",
            "sku_type": "Production PRQ",
        }
    )
    return dict(sorted(fields.items()))


def discovery_detail_table(fields: dict[str, str]) -> str:
    mib = int(fields["memory_physical_size_byte"]) / 1048576
    lines = [
        "Device Type: GPU",
        f"Device Name: {fields['device_name']}",
        f"PCI Device ID: {fields['pci_device_id']}",
        f"Vendor Name: {fields['vendor_name']}",
        f"UUID: {fields['uuid']}",
        f"Serial Number: {fields['serial_number']}",
        f"Core Clock Rate: {fields['core_clock_rate_mhz']} MHz",
        "",
        f"Driver Version: {fields['driver_version']}",
        f"Kernel Version: {fields['kernel_version']}",
        f"GFX Firmware Name: {fields['gfx_firmware_name']}",
        f"GFX Firmware Version: {fields['gfx_firmware_version']}",
        "",
        f"PCI BDF Address: {fields['pci_bdf_address']}",
        f"PCI Slot: {fields['pci_slot']}",
        f"PCIe Generation: {fields['pcie_generation']}",
        f"PCIe Max Link Width: {fields['pcie_max_link_width']}",
        "",
        f"Memory Physical Size: {mib:.2f} MiB",
        f"ECC State: {fields['memory_ecc_state']}",
        f"Number of Memory Channels: {fields['number_of_memory_channels']}",
        f"Memory Bus Width: {fields['memory_bus_width']}",
        "",
        f"Number of EUs: {fields['number_of_eus']}",
        f"Number of Tiles: {fields['number_of_tiles']}",
        f"Number of Slices: {fields['number_of_slices']}",
        f"Number of Sub Slices per Slice: {fields['number_of_sub_slices_per_slice']}",
        f"Number of Threads per EU: {fields['number_of_threads_per_eu']}",
        f"Physical EU SIMD Width: {fields['physical_eu_simd_width']}",
    ]
    rows = [(["Device ID"], ["Device Information"]), ([fields["device_id"]], lines)]
    return _table(DISCOVERY_WIDTHS, rows)


def version_text(hw: dict[str, Any]) -> str:
    """`xpu-smi -v` in the format of the installed release (fixtures 04 and 04c)."""
    version = hw["xpu_smi"]
    build = BUILD_IDS.get(version) or hashlib.sha1(version.encode()).hexdigest()[:8]
    header = "CLI:" if version.startswith("1.0.") else "xpu-smiCLI:"
    return (
        f"{header}\n    Version: {version}\n    Build ID: {build}\n\n"
        f"Service:\n    Version: {version}\n    Build ID: {build}\n"
        f"    Level Zero Version: {hw['level_zero']}\n"
    )


def precheck_table(hw: dict[str, Any], cards: list[dict[str, Any]], root: str = "/") -> str:
    driver_ok = os.path.isdir(_path(root, "/sys/module", hw["driver"]))
    rows: list[tuple[list[str], list[str]]] = [(["Component"], ["Details"])]
    rows.append((["Driver"], ["Status: Pass" if driver_ok else "Status: Fail"]))
    for cpu in range(2):
        rows.append((["CPU"], [f"CPU ID: {cpu}", "Status: Pass"]))
    for card in cards:
        rows.append((["GPU"], [f"BDF: {card['bdf']}", "Status: Pass"]))
    return _table(PRECHECK_WIDTHS, rows) + "\n"


HELP = """Intel XPU System Management Interface -- v1.2
Intel XPU System Management Interface provides the Intel datacenter GPU model.

Usage: xpu-smi [Options]
  xpu-smi -v
  xpu-smi -h
  xpu-smi discovery

Options:
  -h,--help                   Print this help message and exit
  -v,--version                Display version information and exit.

Subcommands:
  discovery                   Discover the GPU devices installed on this machine and provide the device info.
  diag                        Run some test suites to diagnose GPU.
  ps                          List status of processes.
"""  # noqa: E501 - the real help's line length


def xpu_smi(argv: list[str], env: dict[str, str], root: str = "/") -> tuple[int, str, str]:
    """Run the simulated xpu-smi; returns (exit code, stdout, stderr)."""
    node = load_node(root)
    if node is None:
        return 1, "", "Error: the xpufleet lab description /opt/intel/.lab/node.json is missing\n"
    hw = node["hardware"]
    if not argv or argv[0] in ("-h", "--help"):
        return 0, HELP, ""
    if argv[0] in ("-v", "--version"):
        return 0, version_text(hw), ""
    as_json = "-j" in argv or "--json" in argv
    args = [a for a in argv[1:] if a not in ("-j", "--json")]
    cards = present_cards(node, root)
    if argv[0] == "discovery":
        device = _option(args, "-d", "--device")
        if device is None:
            if as_json:
                return 0, json.dumps(discovery_json(hw, cards), indent=4) + "\n", ""
            return 0, discovery_table(hw, cards), ""
        match = [c for c in cards if str(c["index"]) == device or c["bdf"] == device]
        if not match:
            if as_json:
                return 1, json.dumps({"error": "device not found"}, indent=4) + "\n", ""
            return 1, "Error: device not found\n", ""
        fields = detail_fields(hw, match[0], os.uname().release)
        if as_json:
            return 0, json.dumps(fields, indent=4) + "\n", ""
        return 0, discovery_detail_table(fields), ""
    if argv[0] == "ps":
        device = _option(args, "-d", "--device")
        if device is not None:
            cards = [c for c in cards if str(c["index"]) == device or c["bdf"] == device]
            if not cards:
                return 1, "", f"Error: Device handle not found for device ID '{device}'.\n"
        rows = ps_rows(cards, root)
        if as_json:
            return 0, json.dumps({"device_util_by_proc_list": rows}, indent=4) + "\n", ""
        return 0, ps_table(rows), ""
    if argv[0] == "diag" and "--precheck" in args:
        if as_json:
            driver_ok = os.path.isdir(_path(root, "/sys/module", hw["driver"]))
            doc = {
                "driver": {"status": "Pass" if driver_ok else "Fail"},
                "gpu": [{"bdf": c["bdf"], "status": "Pass"} for c in cards],
            }
            return 0, json.dumps(doc, indent=4) + "\n", ""
        return 0, precheck_table(hw, cards, root), ""
    message = f"The following argument was not expected: {argv[0]}\n"
    return 1, "", message + "Run with --help for more information.\n"


def _start_ticks(pid: int) -> str | None:
    """Start time of a live process (the machine's /proc: lab nodes share its pids)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def record_device(card: dict[str, Any], tile: int | None, root: str = "/") -> None:
    """Note that this process works on `card` (torch.xpu.set_device): a real rank shows
    in `xpu-smi ps` on the card it allocates on. Best effort: never breaks set_device."""
    pid = os.getpid()
    doc = {"pid": pid, "start": _start_ticks(pid), "card": card["index"], "tile": tile}
    path = _path(root, PROCS_DIR, f"{pid}.json")
    try:
        with open(path + ".tmp", "w") as fh:
            json.dump(doc, fh)
        os.replace(path + ".tmp", path)
    except OSError:
        pass


def device_processes(root: str = "/") -> list[dict[str, Any]]:
    """Live processes that selected a device (a record whose pid was reused is stale)."""
    found = []
    directory = _path(root, PROCS_DIR)
    for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        try:
            with open(os.path.join(directory, name)) as fh:
                doc = json.load(fh)
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and _start_ticks(int(doc["pid"])) == doc.get("start"):
            found.append(doc)
    return found


def ps_rows(cards: list[dict[str, Any]], root: str = "/") -> list[dict[str, Any]]:
    """`xpu-smi ps -j` rows (intel/xpumanager ial/cmn/cmd_ps.cpp `to_json`, key order
    kept): each device's processes, device by device, xpu-smi itself on every card it
    opened (the self-observer rows real xpu-smi prints, fixture 16a)."""
    me = os.getpid()
    procs = device_processes(root)
    rows = []
    for card in cards:
        users = [(p["pid"], RANK_MEM_KB) for p in procs if p["card"] == card["index"]]
        for pid, mem in sorted(users) + [(me, SELF_MEM_KB)]:
            rows.append(
                {
                    "process_id": pid,
                    "process_name": "xpu-smi" if pid == me else _comm(pid),
                    "device_id": card["index"],
                    "engines": 0,
                    "shared_mem_size": 0,
                    "mem_size": mem,
                }
            )
    return rows


def ps_table(rows: list[dict[str, Any]]) -> str:
    """`xpu-smi ps`: left-aligned columns PID 10, Command 20, DeviceID/SHR/MEM 15
    (intel/xpumanager cli/src/comlet_ps.cpp `getTableResult`)."""
    lines = [f"{'PID':<10}{'Command':<20}{'DeviceID':<15}{'SHR':<15}{'MEM':<15}"]
    for r in rows:
        lines.append(
            f"{r['process_id']:<10}{r['process_name']:<20}{r['device_id']:<15}"
            f"{r['shared_mem_size']:<15}{r['mem_size']:<15}"
        )
    return "\n".join(lines) + "\n"


def _option(args: list[str], short: str, long: str) -> str | None:
    for i, arg in enumerate(args):
        if arg in (short, long) and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(long + "="):
            return arg.split("=", 1)[1]
    return None


# -- sycl-ls ----------------------------------------------------------------------------
def runtime_versions(hw: dict[str, Any]) -> tuple[str, str]:
    """(Level Zero driver version like 1.3.29138, OpenCL NEO version like 24.13.29138.29)."""
    runtime = hw["compute_runtime"]
    build = runtime.split(".")[2] if runtime.count(".") >= 2 else runtime
    return f"1.3.{build}", runtime


def sycl_ls(env: dict[str, str], root: str = "/") -> tuple[int, str, str]:
    """`sycl-ls`: new `[level_zero:gpu][level_zero:N]` format from oneAPI 2024.1 on,
    the old `[ext_oneapi_level_zero:gpu:N]` format before; one line per device."""
    node = load_node(root)
    lines: list[str] = []
    cpu = cpu_model(root)
    new_format = _version_tuple(oneapi_compiler_version(root)) >= (2024, 1)
    gpus = devices(node, env, root) if node else []
    hw = node["hardware"] if node else {}
    l0, neo = runtime_versions(hw) if node else ("", "")
    opencl_gpu = os.path.exists(_path(root, "/etc/OpenCL/vendors/intel.icd"))
    name = hw.get("name", "")
    if new_format:
        for i, _ in enumerate(gpus):
            lines.append(
                f"[level_zero:gpu][level_zero:{i}] Intel(R) oneAPI Unified Runtime over "
                f"Level-Zero, {name} 12.60.7 [{l0}]"
            )
        lines.append(
            f"[opencl:cpu][opencl:0] Intel(R) OpenCL, {cpu} OpenCL 3.0 (Build 0) "
            "[2025.19.4.0.18_160000]"
        )
        if opencl_gpu:
            for i, _ in enumerate(gpus, start=1):
                lines.append(
                    f"[opencl:gpu][opencl:{i}] Intel(R) OpenCL Graphics, {name} "
                    f"OpenCL 3.0 NEO  [{neo}]"
                )
    else:
        lines.append(f"[opencl:cpu:0] Intel(R) OpenCL, {cpu} 3.0 [2023.16.6.0.22_223734]")
        if opencl_gpu:
            neo_short = neo.rsplit(".", 1)[0]
            for i, _ in enumerate(gpus):
                lines.append(f"[opencl:gpu:{i}] Intel(R) OpenCL Graphics, {name} 3.0 [{neo_short}]")
        for i, _ in enumerate(gpus):
            lines.append(f"[ext_oneapi_level_zero:gpu:{i}] Intel(R) Level-Zero, {name} 1.3 [{l0}]")
    return 0, "\n".join(lines) + "\n", ""


# -- torch ------------------------------------------------------------------------------
class XpuDeviceProperties:
    """Stands in for torch's _XpuDeviceProperties (same attribute names and repr)."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)

    def __repr__(self) -> str:
        d = self.__dict__
        return (
            f"_XpuDeviceProperties(name='{d['name']}', platform_name='{d['platform_name']}', "
            f"type='{d['type']}', device_id=0x{d['device_id']:X}, uuid={d['uuid']}, "
            f"driver_version='{d['driver_version']}', "
            f"total_memory={d['total_memory'] // (1024 * 1024)}MB, "
            f"max_compute_units={d['max_compute_units']}, gpu_eu_count={d['gpu_eu_count']}, "
            f"gpu_subslice_count={d['gpu_subslice_count']}, "
            f"max_work_group_size={d['max_work_group_size']}, "
            f"max_num_sub_groups={d['max_num_sub_groups']}, sub_group_sizes=[16 32], "
            f"has_fp16=1, has_fp64=1, has_atomic64=1)"
        )


def device_properties(
    node: dict[str, Any], torch_info: dict[str, Any], card: dict[str, Any], tile: int | None
) -> XpuDeviceProperties:
    hw = node["hardware"]
    tiles = 1 if tile is not None else int(hw["tiles_per_card"])
    eus = int(hw["eus_per_tile"]) * tiles
    memory_mb = int(hw["tile_memory_mb"]) * tiles
    suffix = 0 if tile is None else tile + 1
    return XpuDeviceProperties(
        name=hw["name"],
        platform_name="Intel(R) oneAPI Unified Runtime over Level-Zero",
        type="gpu",
        device_id=int(hw["pci_device_id"], 16),
        uuid=f"{card['soc_uuid'][:23]}-{suffix:012x}",
        driver_version=torch_info.get("driver_version", "1.3.0+0"),
        total_memory=memory_mb * 1024 * 1024,
        max_compute_units=eus,
        gpu_eu_count=eus,
        gpu_subslice_count=eus // 8,
        max_work_group_size=1024,
        max_num_sub_groups=64,
        sub_group_sizes=[16, 32],
        has_fp16=True,
        has_fp64=True,
        has_atomic64=True,
    )


def _device_index(device: Any) -> int:
    if device is None:
        return 0
    if isinstance(device, int):
        return device
    index = getattr(device, "index", None)
    if index is not None or hasattr(device, "type"):
        return int(index or 0)
    text = str(device)
    return int(text.split(":", 1)[1]) if ":" in text else 0


def patch_torch() -> None:
    """Entry point of group `torch.backends`: torch calls it at the end of `import torch`.

    With /opt/intel/.lab/torch.json present, torch.xpu and is_xccl_available answer
    like a Max node; without it (outside a lab node) torch stays plain CPU torch. A
    failure here only warns: torch turns an exception of a backend entry point into a
    failed `import torch`.
    """
    try:
        _patch_torch()
    except Exception as exc:  # noqa: BLE001 - never break `import torch`
        import warnings

        warnings.warn(f"xpufleet lab torch simulation not applied: {exc!r}", stacklevel=2)


def _patch_torch() -> None:
    try:
        with open(os.path.join(LAB_DIR, TORCH_JSON)) as fh:
            torch_info = json.load(fh)
    except (OSError, ValueError):
        return
    node = load_node()
    if node is None:
        return
    import torch
    import torch.distributed as dist

    def visible() -> list[tuple[dict[str, Any], int | None]]:
        if not torch_info.get("xpu_available", True):
            return []  # no GPU driver: Level Zero finds no device
        return devices(node, dict(os.environ))

    current = {"index": 0}

    def set_device(device: Any) -> None:
        """torch.xpu.set_device: an index into the devices Level Zero shows this process
        (after ZE_FLAT_DEVICE_HIERARCHY and ZE_AFFINITY_MASK), refused when out of range."""
        index = _device_index(device)
        listed = visible()
        if not 0 <= index < len(listed):
            raise RuntimeError(f"Invalid device index {index}: {len(listed)} XPU device(s)")
        current["index"] = index
        record_device(*listed[index])

    def get_device_properties(device: Any = None) -> XpuDeviceProperties:
        listed = visible()
        index = current["index"] if device is None else _device_index(device)
        if not 0 <= index < len(listed):
            raise RuntimeError(f"Invalid device index {index}: {len(listed)} XPU device(s)")
        card, tile = listed[index]
        return device_properties(node, torch_info, card, tile)

    xccl = bool(torch_info.get("xccl_available"))
    original_backend_check = dist.is_backend_available

    def is_backend_available(backend: str) -> bool:
        if str(backend).lower() == "xccl":
            return xccl
        return bool(original_backend_check(backend))

    torch.version.xpu = torch_info.get("xpu_version")  # an XPU build says which SYCL
    torch.xpu.is_available = lambda: bool(visible())
    torch.xpu.device_count = lambda: len(visible())
    torch.xpu.get_device_properties = get_device_properties
    torch.xpu.get_device_name = lambda device=None: get_device_properties(device).name
    torch.xpu.set_device = set_device
    torch.xpu.current_device = lambda: current["index"]
    dist.is_xccl_available = lambda: xccl
    dist.is_backend_available = is_backend_available


# -- libfabric ----------------------------------------------------------------------------
#: what a lab node's libfabric offers: loopback traffic only, so the socket providers and
#: no fast NIC (format of `fi_info -l`, fixtures 15a/15b: libfabric's util/info.c)
FI_PROVIDERS = ("ofi_rxm", "shm", "udp", "tcp", "sockets", "ofi_hook_perf", "ofi_hook_noop")
FI_VERSION = "120.0"


def fi_info(argv: list[str]) -> tuple[int, str, str]:
    """The simulated `fi_info`: `-l` lists the providers; anything else is refused."""
    if argv[:1] in (["-l"], ["--list"]):
        out = "".join(f"{name}:\n    version: {FI_VERSION}\n" for name in FI_PROVIDERS)
        return 0, out, ""
    return 1, "", f"xpufleet lab: fi_info {' '.join(argv)} is not simulated (only -l)\n"


# -- launchers ---------------------------------------------------------------------------
def main(tool: str) -> int:
    """Entry of the node's `xpu-smi` / `sycl-ls` launchers."""
    env = dict(os.environ)
    if tool == "xpu-smi":
        code, out, err = xpu_smi(sys.argv[1:], env)
    elif tool == "fi_info":
        code, out, err = fi_info(sys.argv[1:])
    else:
        code, out, err = sycl_ls(env)
    sys.stdout.write(out)
    sys.stderr.write(err)
    return code

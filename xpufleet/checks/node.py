"""Node checks: one node's facts against what its inventory variables expect.

Each function takes (NodeFacts, Expect) and returns one Result whose message says
what was found and what was expected. Statuses: fail = serving will not work (or
will hang), warn = doctor cannot verify something or it is merely suspicious,
skip = the fact does not apply yet (e.g. no Python environment before provision).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..facts.devices import MODELS_BY_KEY, GpuModel, model_from_pci_id, model_key_from_name
from ..facts.model import NodeFacts, ToolRun
from ..facts.versions import at_least
from ..host import Host
from ..requirements import parse_requirement, unsatisfied
from ..results import Result
from ..variables import var
from . import FAIL, PASS, SKIP, WARN, check, result
from .access import ACCESS_CHECKS
from .weights import check_model_files

PYTHON_MIN = "3.10"
#: management daemons that keep /dev/dri open by design (not leftover ranks)
GPU_DAEMONS = frozenset({"xpumd", "xpum", "xpu-smi"})
WILDCARDS = frozenset({"0.0.0.0", "::"})
GB = 1 << 30

GPU_DRIVER = check(
    "gpu.driver",
    "GPU kernel driver",
    "node",
    ("drm", "kernel_module"),
)
GPU_LEVEL_ZERO = check(
    "gpu.level_zero",
    "Level Zero runtime",
    "node",
    ("packages", "sycl-ls"),
)
GPU_OPENCL = check("gpu.opencl", "OpenCL runtime", "node", ("packages", "opencl_icd"))
GPU_XPU_SMI = check(
    "gpu.xpu_smi",
    "xpu-smi present and its version",
    "node",
    ("xpu-smi",),
)
GPU_DEVICES_XPU_SMI = check(
    "gpu.devices.xpu_smi",
    "devices seen by xpu-smi",
    "node",
    ("xpu-smi", "drm"),
)
GPU_DEVICES_SYCL = check(
    "gpu.devices.sycl",
    "devices seen by sycl-ls",
    "node",
    ("sycl-ls",),
)
GPU_DEVICES_AGREE = check(
    "gpu.devices.agree",
    "device counts agree across sysfs, xpu-smi, sycl-ls, torch and the inventory",
    "node",
    ("drm", "xpu-smi", "sycl-ls", "torch"),
)
ONEAPI_VERSION = check(
    "oneapi.version",
    "oneAPI installed and recent enough",
    "node",
    ("oneapi",),
)
ONEAPI_CCL = check("oneapi.ccl", "oneCCL version", "node", ("oneapi",))
PYTHON_VERSION = check("python.version", "Python >= 3.10", "node")
PYTHON_PINS = check("python.pins", "pinned packages of the manual guide", "node")
TORCH_VERSION = check("torch.version", "PyTorch installed and recent enough", "node")
TORCH_XPU = check("torch.xpu", "PyTorch sees the XPU devices", "node", ("torch",))
TORCH_XCCL = check("torch.xccl", "PyTorch has the xccl backend", "node", ("torch",))
TRITON_XPU = check("triton.xpu", "Triton for XPU", "node")
VLLM_VERSION = check("vllm.version", "vLLM installed", "node")
SGLANG_VERSION = check("sglang.version", "SGLang installed", "node")
PYTHON_IMPORTS = check(
    "python.imports", "the modules launch loads import in launch's environment", "node"
)
NET_NIC = check(
    "net.nic",
    "the inventory's nic exists and carries the rendezvous address (node 0) or an address "
    "in its subnet",
    "node",
)
NET_HOSTNAME = check(
    "net.hostname",
    "the hostname resolves to the node's address",
    "node",
)
DISK_MODEL = check("disk.model", "free disk where the model lives", "node")
MEM_FREE = check("mem.free", "free host memory", "node")
CLOCK_OFFSET = check("clock.offset", "clock offset from the control node", "node")
PROC_GPU = check("proc.gpu", "leftover processes holding the GPUs", "node")
PROC_PORTS = check(
    "proc.ports",
    "leftover processes on the SGLang/rendezvous ports",
    "node",
)
PROBE = check("doctor.probe", "the probe ran and returned facts", "node")


@dataclass(frozen=True)
class Expect:
    """What the inventory says one node should look like (defaults from variables.py)."""

    host: str
    address: str
    gpu_model: str
    cards: int
    tiles: int
    device_hierarchy: str
    nic: str | None
    oneapi_min_version: str
    ccl_min_version: str
    torch_min_version: str
    pip_packages: tuple[str, ...]
    conda_packages: tuple[str, ...]
    python_env: str
    venv: str
    min_free_disk_gb: float
    min_free_mem_gb: float
    max_clock_offset_s: float
    ports: tuple[int, ...]
    tile_memory_gb: float
    stack: tuple[str, ...] = ("torch", "triton", "vllm", "sglang")
    node0: str | None = None
    ccl_ze_ipc_exchange: str = "pidfd"
    fi_provider: str = "tcp"
    #: where ranks rendezvous: node 0's rendezvous_address or its inventory address
    rendezvous_address: str | None = None
    python_imports: tuple[str, ...] = ()

    @classmethod
    def from_host(cls, host: Host, node0: Host | None = None) -> Expect:
        return cls(
            host=host.name,
            address=host.address,
            gpu_model=str(var(host, "gpu_model")),
            cards=int(var(host, "cards")),
            tiles=int(var(host, "tiles")),
            device_hierarchy=str(var(host, "device_hierarchy")).upper(),
            nic=var(host, "nic"),
            oneapi_min_version=str(var(host, "oneapi_min_version")),
            ccl_min_version=str(var(host, "ccl_min_version")),
            torch_min_version=str(var(host, "torch_min_version")),
            pip_packages=tuple(str(p) for p in var(host, "pip_packages")),
            conda_packages=tuple(str(p) for p in var(host, "conda_packages")),
            python_env=str(var(host, "python_env")),
            venv=str(var(host, "venv")),
            stack=tuple(str(c) for c in var(host, "stack")),
            min_free_disk_gb=float(var(host, "min_free_disk_gb")),
            min_free_mem_gb=float(var(host, "min_free_mem_gb")),
            max_clock_offset_s=float(var(host, "max_clock_offset_s")),
            ports=tuple(sorted({int(var(host, "sglang_port")), int(var(host, "rendezvous_port"))})),
            tile_memory_gb=float(var(host, "tile_memory_gb")),
            node0=node0.name if node0 else None,
            ccl_ze_ipc_exchange=str(var(host, "ccl_ze_ipc_exchange")),
            fi_provider=str(var(host, "fi_provider")),
            rendezvous_address=(
                str(var(node0, "rendezvous_address") or node0.address) if node0 else None
            ),
            python_imports=tuple(str(m) for m in var(host, "python_imports") or ()),
        )

    @property
    def model(self) -> GpuModel | None:
        return MODELS_BY_KEY.get(self.gpu_model)

    @property
    def devices(self) -> int:
        """Devices the node should expose: tiles (FLAT) or cards (COMPOSITE)."""
        return self.cards if self.device_hierarchy == "COMPOSITE" else self.tiles

    @property
    def tiles_per_card(self) -> int:
        return max(1, self.tiles // max(1, self.cards))


NodeCheck = Callable[[NodeFacts, Expect], Result]


def _env_missing(facts: NodeFacts, check_id: str) -> Result | None:
    """Skip (before provision) or fail (env broken) when the Python env cannot be read."""
    env = facts.env
    if not env.present:
        if facts.probe_kind == "sh":
            return result(check_id, SKIP, "python3 missing on the node: the env was not read")
        return result(
            check_id,
            SKIP,
            f"environment {env.venv} absent (not provisioned yet), expected it after provision",
        )
    if env.error:
        tail = env.error.strip().splitlines()[-1][:200] if env.error.strip() else "no output"
        return result(check_id, FAIL, f"{env.venv}/bin/python failed: {tail}")
    return None


def _devices(n: int | None, what: str = "device") -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


# -- GPU -------------------------------------------------------------------------------
def check_gpu_driver(facts: NodeFacts, expect: Expect) -> Result:
    loaded = [m for m in facts.modules.values() if m.present]
    intel = [c for c in facts.drm if c.intel]
    driven = [c for c in intel if c.driver in ("i915", "xe")]
    wanted = f"expected i915 or xe driving {_devices(expect.cards, 'Intel card')}"
    if not loaded:
        return result(
            GPU_DRIVER,
            FAIL,
            f"found no i915 or xe kernel module loaded "
            f"({len(intel)} Intel card(s) in /sys/class/drm), {wanted}",
        )
    module = loaded[0]
    version = module.version or "version unknown"
    if not intel:
        return result(
            GPU_DRIVER,
            FAIL,
            f"found {module.name} ({version}) but no Intel card in /sys/class/drm, {wanted}",
        )
    if len(driven) < len(intel):
        idle = ", ".join(c.card for c in intel if c not in driven)
        return result(
            GPU_DRIVER,
            FAIL,
            f"found {module.name} ({version}) but {len(intel) - len(driven)} Intel card(s) "
            f"without a driver ({idle}), {wanted}",
        )
    ids = ",".join(sorted({c.device or "?" for c in driven}))
    return result(
        GPU_DRIVER,
        PASS,
        f"found {module.name} {version} driving {_devices(len(driven), 'Intel card')} "
        f"(PCI id {ids}), {wanted}",
        module=module.name,
        version=module.version,
    )


def _packages_text(facts: NodeFacts, names: tuple[str, ...]) -> list[str]:
    return [
        f"{n} {facts.packages[n].version}"
        for n in names
        if n in facts.packages and facts.packages[n].installed
    ]


def check_level_zero(facts: NodeFacts, expect: Expect) -> Result:
    loader = _packages_text(facts, ("level-zero", "libze1"))
    gpu = _packages_text(facts, ("intel-level-zero-gpu", "libze-intel-gpu1"))
    sycl = facts.tools.sycl
    seen = len(sycl.level_zero_gpus) if sycl else 0
    wanted = "expected level-zero (loader) and intel-level-zero-gpu (GPU driver)"
    if loader and gpu:
        return result(GPU_LEVEL_ZERO, PASS, f"found {', '.join(loader + gpu)}, {wanted}")
    if seen:
        return result(
            GPU_LEVEL_ZERO,
            PASS,
            f"found {seen} Level Zero GPU(s) in sycl-ls (runtime not from "
            f"{facts.package_manager or 'a package manager'}), {wanted}",
        )
    if facts.package_manager is None:
        return result(
            GPU_LEVEL_ZERO,
            WARN,
            f"cannot tell: no dpkg or rpm and no Level Zero GPU in sycl-ls, {wanted}",
        )
    missing = [n for n, have in (("level-zero", loader), ("intel-level-zero-gpu", gpu)) if not have]
    return result(
        GPU_LEVEL_ZERO,
        FAIL,
        f"found {', '.join(loader + gpu) or 'no Level Zero package'} "
        f"(missing {', '.join(missing)}), {wanted}",
    )


def check_opencl(facts: NodeFacts, expect: Expect) -> Result:
    icd = _packages_text(facts, ("intel-opencl-icd",))
    files = sorted(n for n in facts.opencl_icds if "intel" in n.lower())
    wanted = "expected intel-opencl-icd and /etc/OpenCL/vendors/intel*.icd"
    if icd and files:
        return result(GPU_OPENCL, PASS, f"found {icd[0]} and {', '.join(files)}, {wanted}")
    found = icd + [f"/etc/OpenCL/vendors/{f}" for f in files]
    return result(
        GPU_OPENCL,
        WARN,
        f"found {', '.join(found) or 'no Intel OpenCL runtime'}, {wanted} "
        "(Level Zero serves torch; OpenCL is used by sycl-ls/clinfo diagnostics)",
    )


def check_xpu_smi(facts: NodeFacts, expect: Expect) -> Result:
    tools = facts.tools
    run = tools.xpu_smi_version_run
    wanted = "expected xpu-smi (Intel XPU Manager) on PATH"
    if not tools.xpu_smi_path or run is None or run.missing:
        return result(
            GPU_XPU_SMI,
            WARN,
            f"found no xpu-smi on PATH, {wanted} (devices cannot be cross-checked)",
        )
    if not run.ok:
        return result(GPU_XPU_SMI, WARN, f"xpu-smi -v failed ({run.why_not()}), {wanted}")
    version = tools.xpu_smi_version
    if version is None or version.cli is None:
        first = run.out.strip().splitlines()[0][:80] if run.out.strip() else "(empty)"
        return result(
            GPU_XPU_SMI,
            WARN,
            f"unknown format of `xpu-smi -v` (first line: {first!r}), {wanted}",
        )
    extra = f", Level Zero {version.level_zero}" if version.level_zero else ""
    note = " (2.x: no `diag`)" if (version.major or 0) >= 2 else ""
    return result(
        GPU_XPU_SMI,
        PASS,
        f"found xpu-smi {version.cli}{extra}{note}, {wanted}",
        version=version.cli,
        level_zero=version.level_zero,
    )


def _card_model(pci_id: str | None, name: str | None, facts: NodeFacts) -> tuple[str, str]:
    """(model key, label) of a card, from its PCI id (preferred) or its name."""
    model = model_from_pci_id(pci_id)
    if model:
        return model.key, f"{model.label} ({pci_id}, {model.tiles} tiles, {model.memory_gb} GB)"
    key = model_key_from_name(name)
    return key or "unknown", name or "unnamed device"


def _model_matches(found: str, expect: Expect) -> bool:
    if found == expect.gpu_model:
        return True
    wanted = expect.model
    model_of_found = MODELS_BY_KEY.get(found)
    # 0x0bd4-0x0bd6 cover the whole 2-tile 128 GB class (Max 1550/1450 share ids)
    return bool(
        wanted
        and model_of_found
        and wanted.memory_gb == model_of_found.memory_gb
        and wanted.tiles == model_of_found.tiles
    )


def _unknown_format(check_id: str, tool: str, run: ToolRun | None, wanted: str) -> Result:
    text = (run.out if run else "").strip()
    first = text.splitlines()[0][:80] if text else "(empty)"
    return result(
        check_id, WARN, f"unknown format of {tool} output (first line: {first!r}), {wanted}"
    )


def check_devices_xpu_smi(facts: NodeFacts, expect: Expect) -> Result:
    tools = facts.tools
    wanted = f"expected {expect.cards} x {expect.gpu_model}"
    if not tools.xpu_smi_path:
        return result(GPU_DEVICES_XPU_SMI, SKIP, f"xpu-smi absent (see gpu.xpu_smi), {wanted}")
    discovery = tools.discovery
    if discovery is None:
        run = tools.xpu_smi_json_run or tools.xpu_smi_discovery_run
        why = run.why_not() if run else "not run"
        return result(GPU_DEVICES_XPU_SMI, FAIL, f"xpu-smi discovery failed ({why}), {wanted}")
    if discovery.format == "unknown":
        run = tools.xpu_smi_discovery_run or tools.xpu_smi_json_run
        return _unknown_format(GPU_DEVICES_XPU_SMI, "xpu-smi discovery", run, wanted)
    drm_ids = {f"/dev/dri/{c.card}": c.device for c in facts.drm}
    models = []
    for device in discovery.devices:
        pci = device.pci_device_id or drm_ids.get(device.drm_device or "")
        models.append(_card_model(pci, device.name, facts))
    count = len(models)
    keys = sorted({k for k, _ in models})
    labels = sorted({label for _, label in models})
    found = f"found {count} x {', '.join(labels)}" if count else "found no device"
    data: dict[str, Any] = {"count": count, "models": keys}
    if count < expect.cards:
        return result(GPU_DEVICES_XPU_SMI, FAIL, f"{found}, {wanted}", **data)
    wrong = [k for k in keys if not _model_matches(k, expect)]
    if wrong:
        return result(GPU_DEVICES_XPU_SMI, FAIL, f"{found}, {wanted}", **data)
    if count > expect.cards:
        return result(
            GPU_DEVICES_XPU_SMI, WARN, f"{found}, {wanted} (more cards than the inventory)", **data
        )
    return result(GPU_DEVICES_XPU_SMI, PASS, f"{found}, {wanted}", **data)


def _hierarchy_of(count: int, expect: Expect) -> str:
    if expect.tiles_per_card == 1:
        return "FLAT=COMPOSITE (1 tile per card)"
    if count == expect.cards * expect.tiles_per_card:
        return "FLAT"
    if count == expect.cards:
        return "COMPOSITE"
    return "neither FLAT nor COMPOSITE of the inventory's cards"


def check_devices_sycl(facts: NodeFacts, expect: Expect) -> Result:
    tools = facts.tools
    wanted = f"expected {expect.devices} {expect.gpu_model} device(s) ({expect.device_hierarchy})"
    run = tools.sycl_ls_run
    if run is None or run.missing:
        status = FAIL if facts.oneapi and facts.oneapi.exists else SKIP
        return result(
            GPU_DEVICES_SYCL, status, f"found no sycl-ls (oneAPI compiler) to run, {wanted}"
        )
    if not run.ok:
        return result(GPU_DEVICES_SYCL, FAIL, f"sycl-ls failed ({run.why_not()}), {wanted}")
    listing = tools.sycl
    if listing is None or listing.format == "unknown":
        return _unknown_format(GPU_DEVICES_SYCL, "sycl-ls", run, wanted)
    gpus = listing.level_zero_gpus
    if not gpus:
        others = len(listing.opencl_gpus)
        return result(
            GPU_DEVICES_SYCL,
            FAIL,
            f"found no Level Zero GPU in sycl-ls ({others} OpenCL GPU(s)), {wanted}",
        )
    names = sorted({d.name for d in gpus})
    keys = sorted({model_key_from_name(d.name) or "unknown" for d in gpus})
    hierarchy = _hierarchy_of(len(gpus), expect)
    found = f"found {len(gpus)} x {', '.join(names)} [{listing.format} format] ({hierarchy})"
    data = {"count": len(gpus), "hierarchy": hierarchy, "format": listing.format}
    if len(gpus) != expect.devices or any(not _model_matches(k, expect) for k in keys):
        return result(GPU_DEVICES_SYCL, FAIL, f"{found}, {wanted}", **data)
    return result(GPU_DEVICES_SYCL, PASS, f"{found}, {wanted}", **data)


def check_devices_agree(facts: NodeFacts, expect: Expect) -> Result:
    """Cards and devices as each source counts them, against each other and the inventory."""
    per_card = expect.tiles_per_card if expect.device_hierarchy == "FLAT" else 1
    cards: dict[str, int] = {"inventory": expect.cards}
    intel = [c for c in facts.drm if c.intel]
    if intel:
        cards["sysfs"] = len(intel)
    discovery = facts.tools.discovery
    if discovery is not None and discovery.format in ("table", "json"):
        cards["xpu-smi"] = len(discovery.devices)
    devices: dict[str, int] = {"inventory": expect.devices}
    if facts.tools.sycl is not None and facts.tools.sycl.format != "unknown":
        devices["sycl-ls"] = len(facts.tools.sycl.level_zero_gpus)
    torch = facts.env.torch
    if torch is not None and torch.xpu_available:
        devices["torch"] = int(torch.device_count or 0)
    shown = ", ".join(
        [f"{k} {v} card(s)" for k, v in cards.items()]
        + [f"{k} {v} device(s)" for k, v in devices.items()]
    )
    if len(cards) + len(devices) <= 2:
        return result(GPU_DEVICES_AGREE, SKIP, f"only the inventory to compare ({shown})")
    as_cards = {k: v for k, v in cards.items()}
    as_cards.update({f"{k} (/{per_card})": v / per_card for k, v in devices.items()})
    if len(set(as_cards.values())) > 1:
        return result(
            GPU_DEVICES_AGREE,
            FAIL,
            f"found {shown}; expected all to agree ({expect.cards} cards x "
            f"{per_card} device(s) per card, {expect.device_hierarchy})",
        )
    return result(GPU_DEVICES_AGREE, PASS, f"found {shown}; all agree")


# -- oneAPI ----------------------------------------------------------------------------
def check_oneapi_version(facts: NodeFacts, expect: Expect) -> Result:
    oneapi = facts.oneapi
    wanted = f"expected oneAPI >= {expect.oneapi_min_version}"
    if oneapi is None or not oneapi.exists:
        root = oneapi.root if oneapi else "the oneapi_root"
        return result(ONEAPI_VERSION, FAIL, f"found no oneAPI at {root}, {wanted}")
    if not oneapi.setvars:
        return result(ONEAPI_VERSION, FAIL, f"found no {oneapi.root}/setvars.sh, {wanted}")
    if not oneapi.version:
        return result(
            ONEAPI_VERSION,
            WARN,
            f"found {oneapi.root} but no version (no <ver>/oneapi-vars.sh, no compiler/latest), "
            f"{wanted}",
        )
    ok = at_least(oneapi.version, expect.oneapi_min_version)
    found = f"found oneAPI {oneapi.version} ({oneapi.version_source})"
    data = {"version": oneapi.version}
    if ok is None:
        return result(ONEAPI_VERSION, WARN, f"{found}: unreadable version, {wanted}", **data)
    return result(ONEAPI_VERSION, PASS if ok else FAIL, f"{found}, {wanted}", **data)


def check_oneapi_ccl(facts: NodeFacts, expect: Expect) -> Result:
    oneapi = facts.oneapi
    wanted = f"expected oneCCL >= {expect.ccl_min_version}"
    if oneapi is None or not oneapi.exists:
        return result(ONEAPI_CCL, FAIL, f"found no oneAPI (see oneapi.version), {wanted}")
    if not oneapi.ccl_version:
        return result(ONEAPI_CCL, FAIL, f"found no {oneapi.root}/ccl/latest, {wanted}")
    ok = at_least(oneapi.ccl_version, expect.ccl_min_version)
    found = f"found oneCCL {oneapi.ccl_version} ({oneapi.root}/ccl/latest)"
    data = {"version": oneapi.ccl_version}
    if ok is None:
        return result(ONEAPI_CCL, WARN, f"{found}: unreadable version, {wanted}", **data)
    return result(ONEAPI_CCL, PASS if ok else FAIL, f"{found}, {wanted}", **data)


# -- Python stack ----------------------------------------------------------------------
def check_python(facts: NodeFacts, expect: Expect) -> Result:
    wanted = f"expected >= {PYTHON_MIN}"
    if facts.python_version is None:
        return result(PYTHON_VERSION, FAIL, f"found no python3 on the node, {wanted}")
    env_version = facts.env.python_version if facts.env.present else None
    version = env_version or facts.python_version
    where = f"{expect.venv}/bin/python" if env_version else "python3"
    ok = at_least(version, PYTHON_MIN)
    status = PASS if ok else FAIL
    return result(PYTHON_VERSION, status, f"found {where} {version}, {wanted}", version=version)


def check_pins(facts: NodeFacts, expect: Expect) -> Result:
    missing_env = _env_missing(facts, PYTHON_PINS)
    if missing_env:
        return missing_env
    installed = {}
    for spec in expect.pip_packages:
        name = parse_requirement(spec).name
        found = facts.env.version_of(name)
        installed[name] = found[1] if found else None
    absent = [n for n, v in installed.items() if v is None]
    wrong = [
        f"{parse_requirement(spec).name} {installed[parse_requirement(spec).name]} (wants {spec})"
        for spec in unsatisfied(list(expect.pip_packages), installed)
        if installed[parse_requirement(spec).name] is not None
    ]
    wanted = f"expected {', '.join(expect.pip_packages)}"
    if expect.python_env == "conda":
        for spec in expect.conda_packages:
            name, _, version = spec.partition("=")
            if name == "libsqlite" and version and facts.env.sqlite != version:
                wrong.append(f"libsqlite {facts.env.sqlite or 'unknown'} (wants {spec})")
        wanted += f" and conda {', '.join(expect.conda_packages)}"
    if absent or wrong:
        found_text = "; ".join(([f"missing {', '.join(absent)}"] if absent else []) + wrong)
        return result(PYTHON_PINS, FAIL, f"found {found_text}, {wanted}")
    return result(
        PYTHON_PINS, PASS, f"found all {len(expect.pip_packages)} pinned packages, {wanted}"
    )


def check_torch_version(facts: NodeFacts, expect: Expect) -> Result:
    missing_env = _env_missing(facts, TORCH_VERSION)
    if missing_env:
        return missing_env
    wanted = f"expected torch >= {expect.torch_min_version}"
    torch = facts.env.torch
    if torch is None:
        error = (facts.env.torch_error or "not installed")[:200]
        return result(TORCH_VERSION, FAIL, f"torch does not import ({error}), {wanted}")
    ok = at_least(torch.version, expect.torch_min_version)
    status = PASS if ok else FAIL
    return result(
        TORCH_VERSION, status, f"found torch {torch.version}, {wanted}", version=torch.version
    )


def check_torch_xpu(facts: NodeFacts, expect: Expect) -> Result:
    missing_env = _env_missing(facts, TORCH_XPU)
    if missing_env:
        return missing_env
    torch = facts.env.torch
    wanted = f"expected torch.xpu with {expect.devices} device(s)"
    if torch is None:
        return result(TORCH_XPU, SKIP, f"torch does not import (see torch.version), {wanted}")
    if not torch.xpu_built:
        return result(TORCH_XPU, FAIL, f"found torch {torch.version} without torch.xpu, {wanted}")
    if not torch.xpu_version:
        # every torch has a torch.xpu module; only an XPU build names its SYCL compiler
        return result(
            TORCH_XPU,
            FAIL,
            f"found torch {torch.version}, not an XPU build (torch.version.xpu is None: a "
            f"CPU or CUDA wheel replaced the built one?), {wanted} from an XPU build",
        )
    if not torch.xpu_available:
        detail = f": {torch.error[:160]}" if torch.error else ""
        return result(
            TORCH_XPU,
            FAIL,
            f"found torch.xpu.is_available() = False{detail}, {wanted}",
        )
    count = int(torch.device_count or 0)
    memories = sorted({round((d.total_memory or 0) / GB, 1) for d in torch.devices})
    per_device = expect.tile_memory_gb * (
        expect.tiles_per_card if expect.device_hierarchy == "COMPOSITE" else 1
    )
    shown = f"found {count} device(s)" + (
        f" of {'/'.join(f'{m:g}' for m in memories)} GB" if memories else ""
    )
    wanted_mem = f"{wanted} of ~{per_device:g} GB"
    if count != expect.devices:
        return result(TORCH_XPU, FAIL, f"{shown}, {wanted_mem}", count=count)
    low = [m for m in memories if m < per_device * 0.9]
    if low:
        return result(TORCH_XPU, WARN, f"{shown}, {wanted_mem}", count=count)
    return result(TORCH_XPU, PASS, f"{shown}, {wanted_mem}", count=count)


def check_torch_xccl(facts: NodeFacts, expect: Expect) -> Result:
    missing_env = _env_missing(facts, TORCH_XCCL)
    if missing_env:
        return missing_env
    torch = facts.env.torch
    wanted = "expected torch.distributed.is_xccl_available() = True"
    if torch is None:
        return result(TORCH_XCCL, SKIP, f"torch does not import (see torch.version), {wanted}")
    if torch.xccl:
        return result(TORCH_XCCL, PASS, f"found xccl in torch {torch.version}, {wanted}")
    return result(
        TORCH_XCCL,
        FAIL,
        f"found torch {torch.version} without xccl, {wanted} (build with USE_XCCL=ON or "
        "use torch >= 2.8 XPU wheels)",
    )


def _package_check(
    check_id: str, names: tuple[str, ...], label: str, component: str
) -> Callable[[NodeFacts, Expect], Result]:
    def run(facts: NodeFacts, expect: Expect) -> Result:
        if component not in expect.stack:
            return result(
                check_id,
                SKIP,
                f"{label} is not in this inventory's stack ({', '.join(expect.stack)})",
            )
        missing_env = _env_missing(facts, check_id)
        if missing_env:
            return missing_env
        found = facts.env.version_of(*names)
        wanted = f"expected {label} in {expect.venv}"
        if found is None:
            return result(check_id, FAIL, f"found no {' / '.join(names)}, {wanted}")
        return result(check_id, PASS, f"found {found[0]} {found[1]}, {wanted}", version=found[1])

    run.__name__ = f"check_{check_id.replace('.', '_')}"
    return run


_check_triton_package = _package_check(
    TRITON_XPU, ("pytorch-triton-xpu", "triton-xpu", "triton"), "Triton for XPU", "triton"
)


def check_triton(facts: NodeFacts, expect: Expect) -> Result:
    """Installed AND Intel's: the PyPI `triton` (CUDA/ROCm backends only) must fail."""
    found = _check_triton_package(facts, expect)
    if found.status != PASS:
        return found
    info = facts.env.triton
    wanted = f"expected Triton with Intel's XPU backend (triton.backends.intel) in {expect.venv}"
    if info is None:
        return result(
            TRITON_XPU,
            WARN,
            f"found triton {found.data.get('version')} but could not look for its backends "
            f"({facts.env.imports_error or 'no report'}), {wanted}",
        )
    if not info.get("intel_backend"):
        return result(
            TRITON_XPU,
            FAIL,
            f"found triton {info.get('version')} without Intel's XPU backend (the PyPI "
            f"CUDA build?), {wanted}",
        )
    return result(
        TRITON_XPU, PASS, f"found triton {info.get('version')} with the Intel backend, {wanted}"
    )


check_vllm = _package_check(VLLM_VERSION, ("vllm",), "vLLM", "vllm")
check_sglang = _package_check(SGLANG_VERSION, ("sglang",), "SGLang", "sglang")


# -- network ---------------------------------------------------------------------------
def _node_addresses(facts: NodeFacts, expect: Expect) -> list[str]:
    """The node's inventory address as IPs (resolved by the node if it is a name)."""
    try:
        ipaddress.ip_address(expect.address)
        return [expect.address]
    except ValueError:
        return list(facts.address_resolved or [])


def _rendezvous_ip(facts: NodeFacts, expect: Expect) -> str | None:
    """The rendezvous address as an IP (a name is resolved like the node's own address
    only when it is the node's address)."""
    address = expect.rendezvous_address
    if not address:
        return None
    try:
        return str(ipaddress.ip_address(address.strip("[]")))
    except ValueError:
        if address == expect.address and facts.address_resolved:
            return str(facts.address_resolved[0])
        return None


def check_nic(facts: NodeFacts, expect: Expect) -> Result:
    """Split networks: SSH may run on a management network (`ansible_host`) while ranks
    meet on `nic` at `rendezvous_address`. Node 0's nic must carry that address; every
    other node's nic an address in its subnet (the interface it reaches node 0 on)."""
    if not expect.nic:
        return result(
            NET_NIC,
            WARN,
            "found no `nic` in the inventory, expected the interface for rendezvous and "
            "collectives (GLOO_SOCKET_IFNAME, CCL_KVS_IFACE, FI_TCP_IFACE)",
        )
    nic = facts.nic
    rendezvous = _rendezvous_ip(facts, expect)
    is_node0 = expect.node0 in (None, expect.host)
    if rendezvous is None:
        targets = _node_addresses(facts, expect)
        wanted = f"expected {expect.nic} to carry {', '.join(targets) or expect.address}"
    elif is_node0:
        targets = [rendezvous]
        wanted = f"expected {expect.nic} to carry the rendezvous address {rendezvous}"
    else:
        targets = []
        wanted = (
            f"expected {expect.nic} to carry an address in the subnet of the rendezvous "
            f"address {rendezvous} (node 0 {expect.node0})"
        )
    if nic is None or not nic.exists:
        return result(NET_NIC, FAIL, f"found no interface {expect.nic}, {wanted}")
    # lo answers for all of 127/8 (the lab's SSH addresses are not assigned to it); an
    # explicit rendezvous_address elsewhere must be carried by the nic itself
    loopback = nic.name == "lo" and expect.rendezvous_address in (None, expect.address)
    shown = ", ".join(f"{i.address}/{i.prefix}" for i in nic.addresses) or "no address"
    if targets:
        ok = any(i.carries(a, loopback_interface=loopback) for a in targets for i in nic.addresses)
    else:
        assert rendezvous is not None
        ok = any(i.same_subnet(rendezvous) for i in nic.addresses)
    return result(NET_NIC, PASS if ok else FAIL, f"found {nic.name} with {shown}, {wanted}")


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def check_hostname(facts: NodeFacts, expect: Expect) -> Result:
    """gloo/oneCCL pick the address the hostname resolves to (REFERENCE §6)."""
    name = facts.hostname or "?"
    if facts.hostname_addresses is None:
        return result(NET_HOSTNAME, SKIP, f"hostname {name}: not resolved (probe ran in sh)")
    own = set(_node_addresses(facts, expect))
    nic_addresses = {i.address for i in facts.nic.addresses} if facts.nic else set()
    resolved = facts.hostname_addresses
    wanted = f"expected {', '.join(sorted(own)) or expect.address} (the node's address)"
    if not resolved:
        return result(
            NET_HOSTNAME,
            WARN,
            f"hostname {name} does not resolve ({facts.hostname_error or 'no address'}), {wanted}",
        )
    shown = ", ".join(resolved)
    if own & set(resolved):
        return result(NET_HOSTNAME, PASS, f"hostname {name} resolves to {shown}, {wanted}")
    foreign_loopback = [a for a in resolved if _is_loopback(a) and a not in own]
    if foreign_loopback:
        return result(
            NET_HOSTNAME,
            FAIL,
            f"hostname {name} resolves to {shown} (loopback, not this node's address), {wanted}",
        )
    if set(resolved) & nic_addresses:
        return result(
            NET_HOSTNAME, PASS, f"hostname {name} resolves to {shown} on {expect.nic}, {wanted}"
        )
    return result(
        NET_HOSTNAME,
        WARN,
        f"hostname {name} resolves to {shown}, not an address of {expect.nic or 'the nic'}, "
        f"{wanted}",
    )


# -- resources -------------------------------------------------------------------------
def check_disk(facts: NodeFacts, expect: Expect) -> Result:
    disk = facts.disk
    wanted = f"expected >= {expect.min_free_disk_gb:g} GB free"
    if disk is None:
        return result(DISK_MODEL, SKIP, "no model_path to check")
    if disk.error or disk.free_bytes is None:
        return result(DISK_MODEL, WARN, f"cannot stat {disk.checked}: {disk.error}, {wanted}")
    free = disk.free_bytes / GB
    where = disk.checked if disk.checked == disk.path else f"{disk.checked} (for {disk.path})"
    status = PASS if free >= expect.min_free_disk_gb else FAIL
    return result(
        DISK_MODEL, status, f"found {free:.1f} GB free at {where}, {wanted}", free_gb=round(free, 2)
    )


def check_memory(facts: NodeFacts, expect: Expect) -> Result:
    memory = facts.memory
    wanted = f"expected >= {expect.min_free_mem_gb:g} GB available"
    if memory is None:
        return result(MEM_FREE, WARN, f"cannot read /proc/meminfo, {wanted}")
    available = memory.available_kb / (1 << 20)
    total = memory.total_kb / (1 << 20)
    status = PASS if available >= expect.min_free_mem_gb else FAIL
    return result(
        MEM_FREE,
        status,
        f"found {available:.1f} GB available of {total:.1f} GB, {wanted}",
        available_gb=round(available, 2),
    )


def check_clock(facts: NodeFacts, expect: Expect) -> Result:
    clock = facts.clock
    limit = expect.max_clock_offset_s
    wanted = f"expected within ±{limit:g} s of the control node"
    if clock is None:
        return result(CLOCK_OFFSET, WARN, f"no clock reading, {wanted}")
    found = f"found {clock.offset:+.3f} s (±{clock.uncertainty:.3f} s)"
    data = {"offset_s": round(clock.offset, 4), "uncertainty_s": round(clock.uncertainty, 4)}
    if abs(clock.offset) - clock.uncertainty > limit:
        return result(CLOCK_OFFSET, FAIL, f"{found}, {wanted}", **data)
    if abs(clock.offset) + clock.uncertainty > limit:
        return result(CLOCK_OFFSET, WARN, f"{found}: too uncertain to tell, {wanted}", **data)
    return result(CLOCK_OFFSET, PASS, f"{found}, {wanted}", **data)


def _holder_text(pid: int, comm: str | None, cmdline: str | None) -> str:
    what = (cmdline or comm or "?")[:60]
    return f"pid {pid} ({what})"


def check_gpu_holders(facts: NodeFacts, expect: Expect) -> Result:
    busy = facts.busy
    wanted = "expected no process holding /dev/dri"
    if busy is None:
        return result(PROC_GPU, SKIP, "not scanned (probe ran without python3)")
    holders = {}
    for path, holder in busy.dri:
        if (holder.comm or "") in GPU_DAEMONS:
            continue
        holders.setdefault(holder.pid, (holder, []))[1].append(path)
    partial = "" if busy.complete else " (some /proc entries unreadable)"
    if holders:
        shown = "; ".join(
            f"{_holder_text(pid, h.comm, h.cmdline)} on {', '.join(sorted(set(paths)))}"
            for pid, (h, paths) in sorted(holders.items())
        )
        return result(
            PROC_GPU,
            FAIL,
            f"found {len(holders)} process(es) holding GPUs: {shown}, {wanted}",
            pids=sorted(holders),
        )
    access = facts.raw.get("access") if isinstance(facts.raw, dict) else None
    if partial and isinstance(access, dict) and access.get("uid") not in (0, None):
        return result(
            PROC_GPU,
            SKIP,
            f"not root ({access.get('user')}): other users' /proc entries are unreadable, "
            f"none found among the readable ones, {wanted}",
        )
    return result(PROC_GPU, PASS, f"found none{partial}, {wanted}")


def _counts_here(address: str, own: set[str], same_ns: list[bool]) -> bool:
    """Does a listener block this node? Its own address always; wildcard and loopback
    listeners only when held from this node's mount namespace (or the holder is unknown):
    nodes that share one network namespace (the lab, containers) see each other's."""
    if address in own:
        return True
    if address in WILDCARDS or _is_loopback(address):
        return not same_ns or any(same_ns)
    return False


def check_ports(facts: NodeFacts, expect: Expect) -> Result:
    busy = facts.busy
    ports = ", ".join(str(p) for p in expect.ports)
    wanted = f"expected ports {ports} free"
    if busy is None:
        return result(PROC_PORTS, SKIP, "not scanned (probe ran without python3)")
    own = set(_node_addresses(facts, expect))
    if facts.nic:
        own |= {i.address for i in facts.nic.addresses if facts.nic.name != "lo"}
    found = []
    for listener in busy.listeners:
        same_ns = [h.same_namespace for h in listener.holders]
        if listener.port not in expect.ports or not _counts_here(listener.address, own, same_ns):
            continue
        holders = [h for h in listener.holders if h.same_namespace] or listener.holders
        who = ", ".join(_holder_text(h.pid, h.comm, h.cmdline) for h in holders) or "unknown pid"
        found.append(f"{listener.address}:{listener.port} held by {who}")
    if found:
        return result(PROC_PORTS, FAIL, f"found {'; '.join(found)}, {wanted}")
    return result(PROC_PORTS, PASS, f"found none listening, {wanted}")


def check_imports(facts: NodeFacts, expect: Expect) -> Result:
    """Import what launch imports at start, in launch's environment (imports_probe.py)."""
    if not expect.python_imports:
        return result(PYTHON_IMPORTS, SKIP, "python_imports is empty: nothing to import")
    missing_env = _env_missing(facts, PYTHON_IMPORTS)
    if missing_env:
        return missing_env
    wanted = f"expected {', '.join(expect.python_imports)} to import"
    report = facts.env.imports
    if report is None:
        why = facts.env.imports_error or "the probe did not report imports"
        return result(PYTHON_IMPORTS, FAIL, f"found no import report ({why[:160]}), {wanted}")
    failed = report.get("failed")
    if failed:
        from ..provision.closed import describe_import_failure

        return result(
            PYTHON_IMPORTS,
            FAIL,
            f"found {describe_import_failure(failed)}, {wanted}",
            module=failed.get("missing") or failed.get("module"),
            distribution=failed.get("distribution"),
        )
    return result(
        PYTHON_IMPORTS, PASS, f"found all {len(report.get('ok') or [])} importing, {wanted}"
    )


def check_probe(facts: NodeFacts, expect: Expect) -> Result:
    """The probe itself: which interpreter ran it and whether any gatherer broke."""
    kind = "python3" if facts.probe_kind == "python" else f"POSIX {facts.probe_kind}"
    if facts.probe_errors:
        shown = "; ".join(e[:120] for e in facts.probe_errors[:3])
        return result(
            PROBE,
            WARN,
            f"the probe ({kind}) hit errors: {shown}, expected none",
            errors=facts.probe_errors,
        )
    return result(PROBE, PASS, f"the probe ran under {kind} without errors, expected no errors")


# -- kernel and fabric (oneCCL's pidfd IPC, libfabric providers) -------------------------
KERNEL_VERSION = check("kernel.version", "kernel new enough for oneCCL's pidfd IPC", "node")
KERNEL_PTRACE = check(
    "kernel.ptrace_scope", "Yama ptrace_scope lets ranks take each other's fds", "node"
)
NET_FABRIC = check(
    "net.fabric", "libfabric providers and the configured fi_provider", "node", ("fi_info",)
)
#: pidfd_open (5.3) and pidfd_getfd (5.6): oneCCL's CCL_ZE_IPC_EXCHANGE=pidfd needs both
PIDFD_KERNEL = (5, 6)


def check_kernel_version(facts: NodeFacts, expect: Expect) -> Result:
    kernel = facts.kernel
    if expect.ccl_ze_ipc_exchange != "pidfd":
        return result(
            KERNEL_VERSION,
            SKIP,
            f"ccl_ze_ipc_exchange is {expect.ccl_ze_ipc_exchange}: no pidfd IPC, "
            "no kernel requirement",
        )
    wanted = "expected >= 5.6 for ccl_ze_ipc_exchange pidfd (pidfd_getfd)"
    if kernel is None or kernel.version is None:
        shown = kernel.release if kernel and kernel.release else "no kernel release"
        return result(KERNEL_VERSION, WARN, f"found {shown}, {wanted}")
    if kernel.version < PIDFD_KERNEL:
        return result(
            KERNEL_VERSION,
            FAIL,
            f"found kernel {kernel.release}, {wanted}; or set ccl_ze_ipc_exchange: drmfd",
        )
    return result(KERNEL_VERSION, PASS, f"found kernel {kernel.release}, {wanted}")


def check_ptrace_scope(facts: NodeFacts, expect: Expect) -> Result:
    """pidfd_getfd needs ptrace-attach rights on the peer rank: with Yama, scope 1 allows
    only descendants (the ranks are siblings), 2 only CAP_SYS_PTRACE, 3 nobody."""
    kernel = facts.kernel
    if expect.ccl_ze_ipc_exchange != "pidfd":
        return result(
            KERNEL_PTRACE,
            SKIP,
            f"ccl_ze_ipc_exchange is {expect.ccl_ze_ipc_exchange}: ptrace_scope does not apply",
        )
    if kernel is None or kernel.uid is None:
        return result(KERNEL_PTRACE, WARN, "found no ptrace_scope/uid facts, expected them")
    user = "root" if kernel.uid == 0 else f"uid {kernel.uid}"
    if kernel.ptrace_scope is None:
        return result(
            KERNEL_PTRACE,
            PASS,
            f"found no Yama (classic ptrace rules) for {user}, expected ranks of one user "
            "to reach each other",
        )
    limit = 2 if kernel.uid == 0 else 0
    wanted = (
        f"expected kernel.yama.ptrace_scope <= {limit} for ranks running as {user} with "
        "ccl_ze_ipc_exchange pidfd"
    )
    if kernel.ptrace_scope > limit:
        return result(
            KERNEL_PTRACE,
            FAIL,
            f"found kernel.yama.ptrace_scope = {kernel.ptrace_scope}, {wanted} "
            "(or ccl_ze_ipc_exchange: drmfd|sockets)",
        )
    return result(
        KERNEL_PTRACE, PASS, f"found kernel.yama.ptrace_scope = {kernel.ptrace_scope}, {wanted}"
    )


def check_fabric(facts: NodeFacts, expect: Expect) -> Result:
    from ..facts.kernel import FAST_PROVIDERS

    fabric = facts.fabric
    provider = expect.fi_provider
    if fabric is None or fabric.tool is None:
        return result(
            NET_FABRIC,
            SKIP,
            f"found no fi_info on the node (PATH, oneAPI mpi/ccl libfabric), cannot list the "
            f"providers for fi_provider {provider}",
        )
    if fabric.error:
        return result(NET_FABRIC, WARN, f"fi_info -l failed: {fabric.error}")
    shown = ", ".join(fabric.providers) or "none"
    listed = [p.split(";")[0] for p in fabric.providers]
    if provider.split(";")[0] not in listed:
        return result(
            NET_FABRIC,
            FAIL,
            f"found providers {shown}, expected fi_provider {provider} among them",
            providers=list(fabric.providers),
        )
    faster = [p for p in FAST_PROVIDERS if p in listed]
    if provider == "tcp" and faster:
        return result(
            NET_FABRIC,
            WARN,
            f"found providers {shown}: fi_provider is tcp but {', '.join(faster)} is available "
            "(faster; tcp works but is slow)",
            providers=list(fabric.providers),
        )
    return result(
        NET_FABRIC,
        PASS,
        f"found providers {shown}, expected fi_provider {provider} among them",
        providers=list(fabric.providers),
    )


NODE_CHECKS: tuple[NodeCheck, ...] = (
    check_probe,
    check_gpu_driver,
    check_level_zero,
    check_opencl,
    check_xpu_smi,
    check_devices_xpu_smi,
    check_devices_sycl,
    check_devices_agree,
    check_oneapi_version,
    check_oneapi_ccl,
    check_python,
    check_pins,
    check_torch_version,
    check_torch_xpu,
    check_torch_xccl,
    check_triton,
    check_vllm,
    check_sglang,
    check_nic,
    check_hostname,
    check_disk,
    check_model_files,
    check_memory,
    check_clock,
    check_gpu_holders,
    check_ports,
    *ACCESS_CHECKS,
    check_kernel_version,
    check_ptrace_scope,
    check_fabric,
    check_imports,
)


def mark_simulated(item: Result, simulated: frozenset[str] | None) -> Result:
    """On a lab node, say so on every result that rests on a simulated fact (an empty
    marker list means everything the check reads may be simulated)."""
    if simulated is None:
        return item
    from . import REGISTRY

    reads = REGISTRY[item.id].simulated_facts
    if item.status != SKIP and reads and (not simulated or reads & simulated):
        item.message += " (simulated)"
        item.data["simulated"] = True
    return item


def run_node_checks(facts: NodeFacts, expect: Expect) -> list[Result]:
    """Every node check, in a stable order; a check that crashes is a failed result."""
    results = []
    for node_check in NODE_CHECKS:
        try:
            item = node_check(facts, expect)
        except Exception as exc:  # noqa: BLE001 - one broken check must not hide the others
            item = result(PROBE, FAIL, f"{node_check.__name__} crashed: {exc!r}")
        results.append(mark_simulated(item, facts.simulated))
    return results


def probe_failed(message: str) -> Result:
    return result(PROBE, FAIL, message)

"""GPU area: kernel driver, Level Zero and OpenCL runtimes, xpu-smi, and the devices as
sysfs, xpu-smi, sycl-ls and torch count them against the inventory."""

from __future__ import annotations

from typing import Any

from ..facts.devices import MODELS_BY_KEY, model_from_pci_id, model_key_from_name
from ..facts.node import NodeFacts
from ..facts.registry import ToolRun
from . import FAIL, PASS, SKIP, WARN, Verdict, node_check, verdict
from .expect import Expect


def _devices(n: int | None, what: str = "device") -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


@node_check("gpu.driver", "GPU kernel driver", reads=("drm", "kernel_module"))
def check_gpu_driver(facts: NodeFacts, expect: Expect) -> Verdict:
    loaded = [m for m in facts.modules.values() if m.present]
    intel = [c for c in facts.drm if c.intel]
    driven = [c for c in intel if c.driver in ("i915", "xe")]
    wanted = f"expected i915 or xe driving {_devices(expect.cards, 'Intel card')}"
    if not loaded:
        return verdict(
            FAIL,
            f"found no i915 or xe kernel module loaded "
            f"({len(intel)} Intel card(s) in /sys/class/drm), {wanted}",
        )
    module = loaded[0]
    version = module.version or "version unknown"
    if not intel:
        return verdict(
            FAIL,
            f"found {module.name} ({version}) but no Intel card in /sys/class/drm, {wanted}",
        )
    if len(driven) < len(intel):
        idle = ", ".join(c.card for c in intel if c not in driven)
        return verdict(
            FAIL,
            f"found {module.name} ({version}) but {len(intel) - len(driven)} Intel card(s) "
            f"without a driver ({idle}), {wanted}",
        )
    ids = ",".join(sorted({c.device or "?" for c in driven}))
    return verdict(
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


@node_check("gpu.level_zero", "Level Zero runtime", reads=("packages", "sycl-ls"))
def check_level_zero(facts: NodeFacts, expect: Expect) -> Verdict:
    loader = _packages_text(facts, ("level-zero", "libze1"))
    gpu = _packages_text(facts, ("intel-level-zero-gpu", "libze-intel-gpu1"))
    sycl = facts.tools.sycl
    seen = len(sycl.level_zero_gpus) if sycl else 0
    wanted = "expected level-zero (loader) and intel-level-zero-gpu (GPU driver)"
    if loader and gpu:
        return verdict(PASS, f"found {', '.join(loader + gpu)}, {wanted}")
    if seen:
        return verdict(
            PASS,
            f"found {seen} Level Zero GPU(s) in sycl-ls (runtime not from "
            f"{facts.packages.manager or 'a package manager'}), {wanted}",
        )
    if facts.packages.manager is None:
        return verdict(
            WARN,
            f"cannot tell: no dpkg or rpm and no Level Zero GPU in sycl-ls, {wanted}",
        )
    missing = [n for n, have in (("level-zero", loader), ("intel-level-zero-gpu", gpu)) if not have]
    return verdict(
        FAIL,
        f"found {', '.join(loader + gpu) or 'no Level Zero package'} "
        f"(missing {', '.join(missing)}), {wanted}",
    )


@node_check("gpu.opencl", "OpenCL runtime", reads=("packages", "opencl_icd"))
def check_opencl(facts: NodeFacts, expect: Expect) -> Verdict:
    icd = _packages_text(facts, ("intel-opencl-icd",))
    files = sorted(n for n in facts.opencl_icds if "intel" in n.lower())
    wanted = "expected intel-opencl-icd and /etc/OpenCL/vendors/intel*.icd"
    if icd and files:
        return verdict(PASS, f"found {icd[0]} and {', '.join(files)}, {wanted}")
    found = icd + [f"/etc/OpenCL/vendors/{f}" for f in files]
    return verdict(
        WARN,
        f"found {', '.join(found) or 'no Intel OpenCL runtime'}, {wanted} "
        "(Level Zero serves torch; OpenCL is used by sycl-ls/clinfo diagnostics)",
    )


@node_check("gpu.xpu_smi", "xpu-smi present and its version", reads=("xpu-smi",))
def check_xpu_smi(facts: NodeFacts, expect: Expect) -> Verdict:
    tools = facts.tools
    run = tools.xpu_smi_version_run
    wanted = "expected xpu-smi (Intel XPU Manager) on PATH"
    if not tools.xpu_smi_path or run is None or run.missing:
        return verdict(
            WARN,
            f"found no xpu-smi on PATH, {wanted} (devices cannot be cross-checked)",
        )
    if not run.ok:
        return verdict(WARN, f"xpu-smi -v failed ({run.why_not()}), {wanted}")
    version = tools.xpu_smi_version
    if version is None or version.cli is None:
        first = run.out.strip().splitlines()[0][:80] if run.out.strip() else "(empty)"
        return verdict(
            WARN,
            f"unknown format of `xpu-smi -v` (first line: {first!r}), {wanted}",
        )
    extra = f", Level Zero {version.level_zero}" if version.level_zero else ""
    note = " (2.x: no `diag`)" if (version.major or 0) >= 2 else ""
    return verdict(
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


def _unknown_format(tool: str, run: ToolRun | None, wanted: str) -> Verdict:
    text = (run.out if run else "").strip()
    first = text.splitlines()[0][:80] if text else "(empty)"
    return verdict(WARN, f"unknown format of {tool} output (first line: {first!r}), {wanted}")


@node_check("gpu.devices.xpu_smi", "devices seen by xpu-smi", reads=("xpu-smi", "drm"))
def check_devices_xpu_smi(facts: NodeFacts, expect: Expect) -> Verdict:
    tools = facts.tools
    wanted = f"expected {expect.cards} x {expect.gpu_model}"
    if not tools.xpu_smi_path:
        return verdict(SKIP, f"xpu-smi absent (see gpu.xpu_smi), {wanted}")
    discovery = tools.discovery
    if discovery is None:
        run = tools.xpu_smi_json_run or tools.xpu_smi_discovery_run
        why = run.why_not() if run else "not run"
        return verdict(FAIL, f"xpu-smi discovery failed ({why}), {wanted}")
    if discovery.format == "unknown":
        run = tools.xpu_smi_discovery_run or tools.xpu_smi_json_run
        return _unknown_format("xpu-smi discovery", run, wanted)
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
        return verdict(FAIL, f"{found}, {wanted}", **data)
    wrong = [k for k in keys if not _model_matches(k, expect)]
    if wrong:
        return verdict(FAIL, f"{found}, {wanted}", **data)
    if count > expect.cards:
        return verdict(WARN, f"{found}, {wanted} (more cards than the inventory)", **data)
    return verdict(PASS, f"{found}, {wanted}", **data)


def _hierarchy_of(count: int, expect: Expect) -> str:
    if expect.tiles_per_card == 1:
        return "FLAT=COMPOSITE (1 tile per card)"
    if count == expect.cards * expect.tiles_per_card:
        return "FLAT"
    if count == expect.cards:
        return "COMPOSITE"
    return "neither FLAT nor COMPOSITE of the inventory's cards"


@node_check("gpu.devices.sycl", "devices seen by sycl-ls", reads=("sycl-ls",))
def check_devices_sycl(facts: NodeFacts, expect: Expect) -> Verdict:
    tools = facts.tools
    wanted = f"expected {expect.devices} {expect.gpu_model} device(s) ({expect.device_hierarchy})"
    run = tools.sycl_ls_run
    if run is None or run.missing:
        status = FAIL if facts.oneapi and facts.oneapi.exists else SKIP
        return verdict(status, f"found no sycl-ls (oneAPI compiler) to run, {wanted}")
    if not run.ok:
        return verdict(FAIL, f"sycl-ls failed ({run.why_not()}), {wanted}")
    listing = tools.sycl
    if listing is None or listing.format == "unknown":
        return _unknown_format("sycl-ls", run, wanted)
    gpus = listing.level_zero_gpus
    if not gpus:
        others = len(listing.opencl_gpus)
        return verdict(
            FAIL,
            f"found no Level Zero GPU in sycl-ls ({others} OpenCL GPU(s)), {wanted}",
        )
    names = sorted({d.name for d in gpus})
    keys = sorted({model_key_from_name(d.name) or "unknown" for d in gpus})
    hierarchy = _hierarchy_of(len(gpus), expect)
    found = f"found {len(gpus)} x {', '.join(names)} [{listing.format} format] ({hierarchy})"
    data = {"count": len(gpus), "hierarchy": hierarchy, "format": listing.format}
    if len(gpus) != expect.devices or any(not _model_matches(k, expect) for k in keys):
        return verdict(FAIL, f"{found}, {wanted}", **data)
    return verdict(PASS, f"{found}, {wanted}", **data)


@node_check(
    "gpu.devices.agree",
    "device counts agree across sysfs, xpu-smi, sycl-ls, torch and the inventory",
    reads=("drm", "xpu-smi", "sycl-ls", "torch"),
)
def check_devices_agree(facts: NodeFacts, expect: Expect) -> Verdict:
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
        return verdict(SKIP, f"only the inventory to compare ({shown})")
    as_cards = {k: v for k, v in cards.items()}
    as_cards.update({f"{k} (/{per_card})": v / per_card for k, v in devices.items()})
    if len(set(as_cards.values())) > 1:
        return verdict(
            FAIL,
            f"found {shown}; expected all to agree ({expect.cards} cards x "
            f"{per_card} device(s) per card, {expect.device_hierarchy})",
        )
    return verdict(PASS, f"found {shown}; all agree")

"""Python stack area: python, the pinned packages, torch (version, XPU, xccl), Triton's
Intel backend, vLLM (and Ray with engine vllm), SGLang, and the modules launch imports,
read in launch's env."""

from __future__ import annotations

import functools
from collections.abc import Callable

from ..facts.node import NodeFacts
from ..facts.python_env import describe_import_failure
from ..facts.versions import at_least
from ..requirements import parse_requirement, unsatisfied
from . import FAIL, PASS, SKIP, WARN, Verdict, node_check, verdict
from .expect import Expect

PYTHON_MIN = "3.10"
GB = 1 << 30


def _needs_env(
    func: Callable[[NodeFacts, Expect], Verdict],
) -> Callable[[NodeFacts, Expect], Verdict]:
    """The check runs only when launch's environment could be read (else skip or fail)."""

    @functools.wraps(func)
    def check(facts: NodeFacts, expect: Expect) -> Verdict:
        return _env_missing(facts) or func(facts, expect)

    return check


def _env_missing(facts: NodeFacts) -> Verdict | None:
    """Skip (before provision) or fail (env broken) when the Python env cannot be read."""
    env = facts.env
    if not env.present:
        if facts.probe.kind == "sh":
            return verdict(SKIP, "python3 missing on the node: the env was not read")
        return verdict(
            SKIP,
            f"environment {env.venv} absent (not provisioned yet), expected it after provision",
        )
    if env.error:
        tail = env.error.strip().splitlines()[-1][:200] if env.error.strip() else "no output"
        return verdict(FAIL, f"{env.venv}/bin/python failed: {tail}")
    return None


@node_check("python.version", "Python >= 3.10")
def check_python(facts: NodeFacts, expect: Expect) -> Verdict:
    wanted = f"expected >= {PYTHON_MIN}"
    if facts.python_version is None:
        return verdict(FAIL, f"found no python3 on the node, {wanted}")
    env_version = facts.env.python_version if facts.env.present else None
    version = env_version or facts.python_version
    where = f"{expect.venv}/bin/python" if env_version else "python3"
    ok = at_least(version, PYTHON_MIN)
    status = PASS if ok else FAIL
    return verdict(status, f"found {where} {version}, {wanted}", version=version)


@node_check("python.pins", "pinned packages of the manual guide")
@_needs_env
def check_pins(facts: NodeFacts, expect: Expect) -> Verdict:
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
        return verdict(FAIL, f"found {found_text}, {wanted}")
    return verdict(PASS, f"found all {len(expect.pip_packages)} pinned packages, {wanted}")


@node_check("torch.version", "PyTorch installed and recent enough")
@_needs_env
def check_torch_version(facts: NodeFacts, expect: Expect) -> Verdict:
    wanted = f"expected torch >= {expect.torch_min_version}"
    torch = facts.env.torch
    if torch is None:
        error = (facts.env.torch_error or "not installed")[:200]
        return verdict(FAIL, f"torch does not import ({error}), {wanted}")
    ok = at_least(torch.version, expect.torch_min_version)
    status = PASS if ok else FAIL
    return verdict(status, f"found torch {torch.version}, {wanted}", version=torch.version)


@node_check("torch.xpu", "PyTorch sees the XPU devices", reads=("torch",))
@_needs_env
def check_torch_xpu(facts: NodeFacts, expect: Expect) -> Verdict:
    torch = facts.env.torch
    wanted = f"expected torch.xpu with {expect.devices} device(s)"
    if torch is None:
        return verdict(SKIP, f"torch does not import (see torch.version), {wanted}")
    if not torch.xpu_built:
        return verdict(FAIL, f"found torch {torch.version} without torch.xpu, {wanted}")
    if not torch.xpu_version:
        # every torch has a torch.xpu module; only an XPU build names its SYCL compiler
        return verdict(
            FAIL,
            f"found torch {torch.version}, not an XPU build (torch.version.xpu is None: a "
            f"CPU or CUDA wheel replaced the built one?), {wanted} from an XPU build",
        )
    if not torch.xpu_available:
        detail = f": {torch.error[:160]}" if torch.error else ""
        return verdict(
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
        return verdict(FAIL, f"{shown}, {wanted_mem}", count=count)
    low = [m for m in memories if m < per_device * 0.9]
    if low:
        return verdict(WARN, f"{shown}, {wanted_mem}", count=count)
    return verdict(PASS, f"{shown}, {wanted_mem}", count=count)


@node_check("torch.xccl", "PyTorch has the xccl backend", reads=("torch",))
@_needs_env
def check_torch_xccl(facts: NodeFacts, expect: Expect) -> Verdict:
    torch = facts.env.torch
    wanted = "expected torch.distributed.is_xccl_available() = True"
    if torch is None:
        return verdict(SKIP, f"torch does not import (see torch.version), {wanted}")
    if torch.xccl:
        return verdict(PASS, f"found xccl in torch {torch.version}, {wanted}")
    return verdict(
        FAIL,
        f"found torch {torch.version} without xccl, {wanted} (build with USE_XCCL=ON or "
        "use torch >= 2.8 XPU wheels)",
    )


def _installed(
    facts: NodeFacts, expect: Expect, names: tuple[str, ...], label: str, component: str
) -> Verdict:
    """One component of the stack installed in the env (skip when not in `stack`)."""
    if component not in expect.stack:
        return verdict(
            SKIP,
            f"{label} is not in this inventory's stack ({', '.join(expect.stack)})",
        )
    missing_env = _env_missing(facts)
    if missing_env:
        return missing_env
    found = facts.env.version_of(*names)
    wanted = f"expected {label} in {expect.venv}"
    if found is None:
        return verdict(FAIL, f"found no {' / '.join(names)}, {wanted}")
    return verdict(PASS, f"found {found[0]} {found[1]}, {wanted}", version=found[1])


@node_check("triton.xpu", "Triton for XPU")
def check_triton(facts: NodeFacts, expect: Expect) -> Verdict:
    """Installed AND Intel's: the PyPI `triton` (CUDA/ROCm backends only) must fail."""
    found = _installed(
        facts, expect, ("pytorch-triton-xpu", "triton-xpu", "triton"), "Triton for XPU", "triton"
    )
    if found.status != PASS:
        return found
    info = facts.env.triton
    wanted = f"expected Triton with Intel's XPU backend (triton.backends.intel) in {expect.venv}"
    if info is None:
        return verdict(
            WARN,
            f"found triton {found.data.get('version')} but could not look for its backends "
            f"({facts.env.imports_error or 'no report'}), {wanted}",
        )
    if not info.get("intel_backend"):
        return verdict(
            FAIL,
            f"found triton {info.get('version')} without Intel's XPU backend (the PyPI "
            f"CUDA build?), {wanted}",
        )
    return verdict(PASS, f"found triton {info.get('version')} with the Intel backend, {wanted}")


@node_check("vllm.version", "vLLM installed")
def check_vllm(facts: NodeFacts, expect: Expect) -> Verdict:
    return _installed(facts, expect, ("vllm",), "vLLM", "vllm")


@node_check("ray.version", "Ray installed for vLLM's executor (engine vllm)")
def check_ray(facts: NodeFacts, expect: Expect) -> Verdict:
    """Ray in the env when vLLM serves: the fork forces its Ray executor on XPU
    (vllm/platforms/xpu.py) and lists `ray >= 2.9` in requirements-xpu.txt."""
    if expect.engine != "vllm":
        return verdict(
            SKIP,
            f"engine is {expect.engine}: Ray expected only with engine vllm (vLLM's executor)",
        )
    missing_env = _env_missing(facts)
    if missing_env:
        return missing_env
    wanted = f"expected {expect.ray_requirement} in {expect.venv} (engine vllm)"
    found = facts.env.version_of("ray")
    if found is None:
        return verdict(FAIL, f"found no ray, {wanted}")
    name = parse_requirement(expect.ray_requirement, where="ray_requirement").name
    if unsatisfied([expect.ray_requirement], {name: found[1]}):
        return verdict(FAIL, f"found ray {found[1]}, {wanted}", version=found[1])
    return verdict(PASS, f"found ray {found[1]}, {wanted}", version=found[1])


@node_check("sglang.version", "SGLang installed")
def check_sglang(facts: NodeFacts, expect: Expect) -> Verdict:
    return _installed(facts, expect, ("sglang",), "SGLang", "sglang")


@node_check("python.imports", "the modules launch loads import in launch's environment")
def check_imports(facts: NodeFacts, expect: Expect) -> Verdict:
    """Import what launch imports at start, in launch's environment (facts/remote/imports.py)."""
    if not expect.python_imports:
        return verdict(SKIP, "python_imports is empty: nothing to import")
    missing_env = _env_missing(facts)
    if missing_env:
        return missing_env
    wanted = f"expected {', '.join(expect.python_imports)} to import"
    report = facts.env.imports
    if report is None:
        why = facts.env.imports_error or "the probe did not report imports"
        return verdict(FAIL, f"found no import report ({why[:160]}), {wanted}")
    failed = report.get("failed")
    if failed:
        return verdict(
            FAIL,
            f"found {describe_import_failure(failed)}, {wanted}",
            module=failed.get("missing") or failed.get("module"),
            distribution=failed.get("distribution"),
        )
    return verdict(PASS, f"found all {len(report.get('ok') or [])} importing, {wanted}")

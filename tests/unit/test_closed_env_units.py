"""The closed environment's pure parts: lock request, pip report, env diff, import
verdicts, doctor's XPU-torch and Intel-Triton assertions on fixtures, Triton modes."""

from __future__ import annotations

import copy
import json
import zipfile
from pathlib import Path

import pytest
from doctor_samples import expect, facts, healthy_raw

from xpufleet.build import add_prebuilt, plan_build
from xpufleet.checks.python_stack import check_imports, check_torch_xpu, check_triton
from xpufleet.errors import InputError
from xpufleet.host import Host
from xpufleet.lab.envfaults import FOREIGN_TORCH_VERSION, foreign_torch_wheel
from xpufleet.provision.closed import env_diff, imports_decision
from xpufleet.provision.manifest import LockedDist, Manifest, WheelEntry, load_manifest
from xpufleet.provision.wheelhouse import lock_inputs, parse_report, wheel_modules

SHA = "ab" * 32


def wheel(name: str, version: str, **kw: object) -> WheelEntry:
    return WheelEntry(name, version, f"{name}-{version}-py3-none-any.whl", SHA, 1, **kw)  # type: ignore[arg-type]


def locked(name: str, version: str, *modules: str) -> LockedDist:
    return LockedDist(name, version, f"{name}-{version}-py3-none-any.whl", SHA, 1, modules)


def test_lock_inputs_pin_every_built_wheel_and_drop_requirements_naming_them(
    tmp_path: Path,
) -> None:
    manifest = Manifest(tmp_path / "manifest.json")
    manifest.upsert(wheel("torch", "2.7.0a0+gitc21dc11"))
    manifest.upsert(wheel("vllm", "0.7.3", requires=("torch==2.5.1", "transformers>=4.45", "ray")))
    manifest.upsert(wheel("sglang", "0.4.3.post2", extras=("all_xpu",)))
    inputs = lock_inputs(manifest, ["msgspec", "compressed_tensors"], ["numpy<2"])
    assert inputs.constraints == (
        "torch==2.7.0a0+gitc21dc11",
        "vllm==0.7.3",
        "sglang==0.4.3.post2",
        "numpy<2",
    )
    assert inputs.wheels[-1].endswith("sglang-0.4.3.post2-py3-none-any.whl[all_xpu]")
    assert inputs.requirements == ("transformers>=4.45", "ray", "msgspec", "compressed_tensors")


def test_parse_report_keeps_what_pip_would_install_except_built_and_pip() -> None:
    report = {
        "install": [
            {"metadata": {"name": "sglang", "version": "0.4.3.post2"}},
            {"metadata": {"name": "Py_CPUinfo", "version": "9.0.0"}},
            {"metadata": {"name": "pip", "version": "25.0"}},
            {"metadata": {"name": "setuptools", "version": "80.0"}},
            {"metadata": {"name": "orjson", "version": "3.10.0"}},
        ]
    }
    pins = parse_report(json.dumps(report), ["sglang"])
    assert pins == [("orjson", "3.10.0"), ("py-cpuinfo", "9.0.0"), ("setuptools", "80.0")]


def test_manifest_round_trips_the_lock(tmp_path: Path) -> None:
    manifest = Manifest(tmp_path / "manifest.json", [wheel("sglang", "1", extras=("all_xpu",))])
    manifest.locked = [locked("orjson", "3.10.0", "orjson"), locked("pyzmq", "26.0", "zmq")]
    manifest.requirements, manifest.constraints = ["msgspec"], ["sglang==1"]
    manifest.save()
    again = load_manifest(manifest.path)
    assert again.locked == manifest.locked and again.wheels[0].extras == ("all_xpu",)
    assert again.module_map() == {"orjson": "orjson", "zmq": "pyzmq", "sglang": "sglang"}
    assert again.locked[0].requirement == f"orjson==3.10.0 --hash=sha256:{SHA}"
    doc = json.loads(manifest.path.read_text())
    doc["lock"]["packages"][0]["sha256"] = "nothex"
    manifest.path.write_text(json.dumps(doc))
    with pytest.raises(InputError, match="sha256 of orjson"):
        load_manifest(manifest.path)


def test_wheel_modules_from_top_level_or_record(tmp_path: Path) -> None:
    name, data = foreign_torch_wheel()
    (tmp_path / name).write_bytes(data)
    assert wheel_modules(tmp_path / name) == ("torch",)
    with zipfile.ZipFile(tmp_path / "z-1-py3-none-any.whl", "w") as archive:
        archive.writestr("z-1.dist-info/top_level.txt", "zmq\n")
    assert wheel_modules(tmp_path / "z-1-py3-none-any.whl") == ("zmq",)


def _state(seen: dict[str, str], own: dict[str, str]) -> str:
    return json.dumps({"seen": seen, "own": own, "cache": {}})


def test_env_diff_installs_missing_and_wrong_removes_foreign() -> None:
    lock = [locked("orjson", "3.10.0"), locked("fastapi", "0.115.0")]
    keep = frozenset({"sglang"})
    ok = env_diff(
        _state({"orjson": "3.10.0", "fastapi": "0.115.0", "torch": "2.13.0"}, {"orjson": "3.10.0"}),
        lock,
        keep,
    )
    assert ok is not None and ok.empty
    broken = env_diff(
        _state(
            {"fastapi": "0.99.0", "torch": FOREIGN_TORCH_VERSION, "pip": "24", "sglang": "1"},
            {"fastapi": "0.99.0", "torch": FOREIGN_TORCH_VERSION, "pip": "24", "sglang": "1"},
        ),
        lock,
        keep,
    )
    assert broken is not None
    assert [d.name for d in broken.install] == ["orjson", "fastapi"]
    assert broken.remove == ["torch"]  # pip (the installer) and built wheels stay
    assert env_diff("Traceback ...", lock, keep) is None


def test_imports_decision_names_module_and_distribution() -> None:
    failed = {
        "imports": {
            "ok": [],
            "failed": {
                "module": "sglang.launch_server",
                "error": "ModuleNotFoundError: No module named 'orjson'",
                "missing": "orjson",
                "distribution": "orjson",
            },
        }
    }
    verdict = imports_decision("noise\n@@XPUFLEET-IMPORTS@@" + json.dumps(failed), ["m"])
    assert verdict.status == "failed"
    assert "No module named 'orjson'" in verdict.message
    assert "distribution orjson" in verdict.message
    good = {"imports": {"ok": ["m"], "failed": None}}
    assert imports_decision("@@XPUFLEET-IMPORTS@@" + json.dumps(good), ["m"]).status == "ok"
    assert imports_decision("bash: python: not found", ["m"]).status == "failed"


def _env_facts(**result: object):  # type: ignore[no-untyped-def]
    raw = copy.deepcopy(healthy_raw())
    raw["env"]["result"].update(result)
    return facts(raw)


def test_doctor_fails_a_torch_that_is_not_an_xpu_build() -> None:
    raw_torch = copy.deepcopy(healthy_raw()["env"]["result"]["torch"])
    assert check_torch_xpu(_env_facts(), expect()).status == "pass"
    raw_torch.update({"version": "2.7.0+cu126", "xpu_version": None})
    found = check_torch_xpu(_env_facts(torch=raw_torch), expect())
    assert found.status == "fail" and "not an XPU build" in found.message


def test_doctor_fails_the_pypi_cuda_triton() -> None:
    assert check_triton(_env_facts(), expect()).status == "pass"
    packages = dict(healthy_raw()["env"]["result"]["packages"])
    packages.pop("pytorch-triton-xpu")
    packages["triton"] = "3.2.0"
    cuda = _env_facts(packages=packages, triton={"version": "3.2.0", "intel_backend": False})
    found = check_triton(cuda, expect())
    assert found.status == "fail" and "without Intel's XPU backend" in found.message


def test_doctor_python_imports_names_the_missing_distribution() -> None:
    assert check_imports(_env_facts(), expect()).status == "pass"
    report = {
        "ok": [],
        "failed": {
            "module": "sglang.launch_server",
            "error": "ModuleNotFoundError: No module named 'uvloop'",
            "missing": "uvloop",
            "distribution": "uvloop",
        },
    }
    found = check_imports(_env_facts(imports=report), expect())
    assert found.status == "fail" and "distribution uvloop" in found.message


def test_triton_prebuilt_mode_records_the_operators_wheel(tmp_path: Path) -> None:
    name = "triton-3.2.0+git6fa2562b-cp310-cp310-linux_x86_64.whl"
    (tmp_path / name).write_bytes(b"not really a wheel, hashed all the same")
    host = Host("build1", "10.0.0.9", vars={"triton_mode": "prebuilt"})
    with pytest.raises(InputError, match="triton_wheel"):
        plan_build(host, ["triton"])
    host = Host("build1", "10.0.0.9", vars={"triton_mode": "prebuilt", "triton_wheel": "/nope.whl"})
    with pytest.raises(InputError, match="no such wheel"):
        plan_build(host, ["triton"])
    host = Host(
        "build1", "10.0.0.9", vars={"triton_mode": "prebuilt", "triton_wheel": str(tmp_path / name)}
    )
    plan = plan_build(host, ["triton"])
    assert plan.recipes[0].prebuilt == tmp_path / name
    out = tmp_path / "wheels"
    result = add_prebuilt(plan.recipes[0], out)
    entry = load_manifest(out / "manifest.json").wheels[0]
    assert result.status == "changed" and entry.commit == "6fa2562b"
    assert entry.version == "3.2.0+git6fa2562b" and (out / name).is_file()


def test_triton_source_mode_installs_its_build_requirements_first() -> None:
    plan = plan_build(Host("build1", "10.0.0.9", vars={}), ["triton"])
    script = plan.recipes[0].script
    assert plan.recipes[0].prebuilt is None
    assert script.index("pip install ninja cmake wheel pybind11") < script.index("pip wheel")


def test_standin_declares_the_same_runtime_dependencies_in_both_builds() -> None:
    """build_wheel's metadata and pkg/pyproject.toml (what `pip wheel` builds on a build
    host) declare the same requirements and extras."""
    import tomllib

    from xpufleet.lab.standin import EXTRAS, REQUIRES, RUNTIME_COMMON, SOURCE_DIR

    project = tomllib.loads((SOURCE_DIR / "pyproject.toml").read_text())["project"]
    assert project["dependencies"] == [r for r in REQUIRES if ";" not in r]
    assert set(project["optional-dependencies"]) == set(EXTRAS)
    for extra in EXTRAS:
        assert project["optional-dependencies"][extra] == list(RUNTIME_COMMON)


def test_extras_are_requested_as_the_wheel_spells_them(tmp_path: Path) -> None:
    """setuptools >= 69 writes the fork's `all_xpu` as `Provides-Extra: all-xpu`."""
    path = tmp_path / "sglang-1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("sglang-1.dist-info/METADATA", "Name: sglang\nProvides-Extra: all-xpu\n")
    manifest = Manifest(tmp_path / "manifest.json", [wheel("sglang", "1", extras=("all_xpu",))])
    assert lock_inputs(manifest, []).wheels == (f"{path}[all-xpu]",)

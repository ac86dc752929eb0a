"""`invoke build` recipes render with the pinned versions as variables (no SSH)."""

from __future__ import annotations

from pathlib import Path

import pytest

from xpufleet.build import plan_build, source_tarball
from xpufleet.errors import InputError
from xpufleet.host import Host

HELLO = Path(__file__).resolve().parents[1] / "data" / "pkgs" / "xpufleet_hello"


def recipes(**vars: object) -> dict[str, str]:
    p = plan_build(Host("build1", "10.0.0.1", vars=dict(vars)))
    return {r.name: r.script for r in p.recipes}


def test_reference_pins_render() -> None:
    scripts = recipes()
    assert list(scripts) == ["torch", "triton", "vllm", "sglang"]
    torch = scripts["torch"]
    assert "git checkout --force c21dc11" in torch
    assert "export USE_XCCL=ON" in torch and "export USE_STATIC_MKL=1" in torch
    assert "setup.py bdist_wheel" in torch and ". /opt/xpufleet/env/oneapi.sh" in torch
    assert "git checkout --force 6fa2562b" in scripts["triton"]
    assert "https://github.com/zhuyuhua-v/vllm" in scripts["vllm"]
    assert "yuhua/deepseek" in scripts["vllm"]
    assert "export VLLM_TARGET_DEVICE=xpu" in scripts["vllm"]
    assert "https://github.com/cboss6/sglang" in scripts["sglang"]
    assert "deepseek-xpu-distribute" in scripts["sglang"]


def test_versions_are_variables_not_literals() -> None:
    scripts = recipes(torch_commit="deadbee", build_recipes=["torch"], venv="/e")
    assert "git checkout --force deadbee" in scripts["torch"]
    assert "c21dc11" not in scripts["torch"]
    assert (
        "'/e/bin/python' setup.py bdist_wheel" in scripts["torch"]
        or "/e/bin/python setup.py" in scripts["torch"]
    )


def test_torch_recipe_promises_xccl() -> None:
    p = plan_build(Host("b", "10.0.0.1"), ["torch"])
    assert p.recipes[0].features == ("xccl",)


def test_unknown_recipe_and_bad_source_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown recipe"):
        plan_build(Host("b", "10.0.0.1"), ["pytorch"])
    with pytest.raises(InputError, match="pyproject"):
        plan_build(Host("b", "10.0.0.1"), local_source=tmp_path)


def test_local_source_recipe_and_deterministic_tarball() -> None:
    p = plan_build(Host("b", "10.0.0.1", vars={"python": "/lab/py"}), local_source=HELLO)
    (recipe,) = p.recipes
    assert recipe.name == "xpufleet_hello" and recipe.local == HELLO
    assert "/lab/py -m pip wheel --no-deps" in recipe.script
    assert source_tarball(HELLO) == source_tarball(HELLO)


FORK = Path(__file__).resolve().parents[1] / "fixtures" / "vllm_fork"


def test_vllm_recipe_keeps_the_forks_requirements_ray_included(tmp_path: Path) -> None:
    """The recipe's own requirement filter, run on the fork's real files: Ray stays (the
    lock resolves it), the pins of another stack (torch 2.5 and IPEX by URL, oneccl_bind_pt,
    triton-xpu) go, and `-r` includes are not requirements."""
    import subprocess

    lines = recipes()["vllm"].splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("cat requirements-common.txt"))
    pipeline = "\n".join(lines[start : start + 3])  # cat ... \ | grep -v ... \ > requires.txt
    assert pipeline.endswith('> "$WORK/requires.txt"')
    for name in ("requirements-common.txt", "requirements-xpu.txt"):
        (tmp_path / name).write_text((FORK / name).read_text())
    subprocess.run(
        ["bash", "-euo", "pipefail", "-c", pipeline],
        cwd=tmp_path,
        check=True,
        env={"PATH": "/usr/bin:/bin", "WORK": str(tmp_path)},
    )
    kept = [ln.strip() for ln in (tmp_path / "requires.txt").read_text().splitlines()]
    assert (
        "ray >= 2.9" in kept
        and "transformers >= 4.48.2  # Required for Bamba model and Transformers backend." in kept
    )
    assert not [
        ln
        for ln in kept
        if ln.startswith(("torch", "intel-extension", "oneccl", "triton-xpu", "-r"))
    ]


def test_engine_vllm_puts_ray_in_the_lock_and_needs_the_vllm_wheel() -> None:
    from xpufleet.build import engine_problem, engine_requirements, lock_host_vars

    pins = ["setuptools==75.6.0"]
    assert engine_requirements(pins, "sglang", "ray>=2.9") == pins
    assert engine_requirements(pins, "vllm", "ray>=2.9") == [*pins, "ray>=2.9"]
    # a pin the operator already gives wins
    assert engine_requirements(["ray==2.60.0"], "vllm", "ray>=2.9") == ["ray==2.60.0"]
    with pytest.raises(InputError, match="not a pip requirement") as info:
        engine_requirements(pins, "vllm", "ray >= = 2")
    assert info.value.key == "ray_requirement"
    host = Host("build1", "10.0.0.1", vars={"engine": "vllm", "ray_requirement": "ray==2.60.0"})
    v = lock_host_vars(host)
    assert v["engine"] == "vllm" and v["pip_packages"][-1] == "ray==2.60.0"
    assert "ray==2.60.0" not in lock_host_vars(Host("b", "10.0.0.1"))["pip_packages"]
    assert engine_problem(["torch", "vllm", "sglang"], "vllm") is None
    assert engine_problem(["sglang"], "sglang") is None
    problem = engine_problem(["torch", "sglang"], "vllm")
    assert problem is not None and "no vllm wheel" in problem

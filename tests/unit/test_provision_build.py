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

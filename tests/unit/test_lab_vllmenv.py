"""The lab's vLLM environment: pip configuration handed to uv, the lab-only plugin."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from xpufleet.lab import vllmenv
from xpufleet.lab.vllmenv import pip_config_to_uv, plugin_tree

# what `pip config list` prints on the lab machines (global and :env: entries repeat)
PIP_CONFIG = """\
:env:.cert='/etc/ssl/certs/ca-certificates.crt'
:env:.find-links='/opt/wheels'
global.constraint='/etc/xdg/pip/constraints.txt'
global.extra-index-url='file:///opt/pypi/simple file:///opt/pypi-more/simple'
global.find-links='/opt/wheels /srv/more-wheels'
"""


def test_pip_config_to_uv_keeps_wheel_folders_and_constraints_once() -> None:
    assert pip_config_to_uv(PIP_CONFIG) == [
        "--find-links", "/opt/wheels",
        "--constraints", "/etc/xdg/pip/constraints.txt",
        "--find-links", "/srv/more-wheels",
    ]  # fmt: skip


def test_pip_config_to_uv_without_configuration() -> None:
    assert pip_config_to_uv("") == []
    assert pip_config_to_uv("global.timeout='60'\n") == []


def test_plugin_entry_point_names_a_loadable_function(tmp_path: Path) -> None:
    """The entry point must resolve without vLLM installed (vLLM loads it before it picks
    a platform) and name the class vLLM will import."""
    tree = plugin_tree()
    entry = tree[f"{vllmenv.PLUGIN_DIST}/entry_points.txt"].content or ""
    assert entry.splitlines()[0] == "[vllm.platform_plugins]"
    target = entry.splitlines()[1].split("=", 1)[1].strip()
    module_name, func = target.split(":")
    source = tmp_path / f"{module_name}.py"
    source.write_text(tree[f"{module_name}.py"].content or "")
    spec = importlib.util.spec_from_file_location(module_name, source)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert getattr(module, func)() == f"{module_name}.CpuRayPlatform"

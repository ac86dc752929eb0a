"""The probe itself, run here for real (python3 and the POSIX-sh fallback): one JSON
document whatever is missing, and parameters that arrive as literal data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from xpufleet.errors import InputError
from xpufleet.facts.node import parse_facts
from xpufleet.facts.probe import PROBE_COMMAND, ProbeScript, build_script, probe_params
from xpufleet.facts.registry import FACTS
from xpufleet.host import Host

SH_TOOLS = (
    "sh",
    "awk",
    "tr",
    "head",
    "date",
    "hostname",
    "df",
    "ip",
    "dirname",
    "readlink",
    "dpkg",
    "timeout",
    "cat",
    "stat",
)


def run_probe_locally(script: ProbeScript, env: dict[str, str] | None = None) -> dict:
    """PROBE_COMMAND with the script on stdin, as sshd would run it; its sections decoded."""
    proc = subprocess.run(
        ["sh", "-c", PROBE_COMMAND],
        input=script.text,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    raw = script.decode(proc.stdout)
    assert raw is not None, proc.stdout[:500]
    # every fact's section is there (python: all of them; sh: those with a snippet)
    assert set(raw) == {f.key for f in FACTS if raw["probe"]["kind"] == "python" or f.sh != ":"}
    return raw


def sh_only_bin(tmp_path: Path) -> Path:
    """A PATH dir with this machine's copies of SH_TOOLS and no python3."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in SH_TOOLS:
        found = shutil.which(name)
        if found:
            os.symlink(found, bin_dir / name)
    return bin_dir


def hostile_host(tmp_path: Path) -> tuple[Host, Path]:
    marker = tmp_path / "pwned"
    evil = f"$(touch {marker})'; touch {marker}; '"
    host = Host(
        "node1",
        "127.0.0.1",
        vars={
            "nic": evil,
            "model_path": f"{tmp_path}/models/`touch {marker}`",
            "venv": f"{tmp_path}/venv $(touch {marker})",
            "oneapi_root": str(tmp_path / "oneapi"),
            "state_dir": str(tmp_path / "state"),
        },
    )
    return host, marker


def test_python_probe_on_this_machine_reports_absent_hardware(tmp_path: Path) -> None:
    host, marker = hostile_host(tmp_path)
    raw = run_probe_locally(build_script(probe_params(host, [host])))
    assert not marker.exists(), "a parameter was executed by a shell"
    assert raw["probe"]["kind"] == "python" and raw["probe"]["errors"] == []
    assert raw["nic"]["name"] == host.vars["nic"] and raw["nic"]["exists"] is False
    assert raw["disk"]["path"] == host.vars["model_path"]
    assert raw["disk"]["checked"] == str(tmp_path)  # nearest existing parent
    assert raw["env"]["present"] is False
    (connect,) = raw["rendezvous"]
    assert (connect["host"], connect["address"], connect["port"]) == ("node1", "127.0.0.1", 29500)
    assert connect["result"] in ("refused", "open")
    facts = parse_facts("node1", raw, sent=raw["clock"]["start"], received=raw["clock"]["start"])
    assert facts.tools.xpu_smi_path is None  # no xpu-smi here: absent, not a crash
    assert facts.oneapi is not None and not facts.oneapi.exists
    assert facts.memory is not None and facts.memory.total_kb > 0


def test_probe_sees_a_fake_oneapi_tree_and_wheels_manifest(tmp_path: Path) -> None:
    root = tmp_path / "oneapi"
    (root / "ccl" / "2021.14").mkdir(parents=True)
    (root / "ccl" / "latest").symlink_to("2021.14")
    (root / "2025.0").mkdir()
    (root / "2025.0" / "oneapi-vars.sh").write_text("")
    (root / "setvars.sh").write_text("")
    state = tmp_path / "state"
    state.mkdir()
    manifest = {"format": 1, "wheels": {"torch": {"version": "2.7", "sha256": "ab" * 32}}}
    (state / "wheels.json").write_text(json.dumps(manifest))
    host = Host(
        "node1",
        "127.0.0.1",
        vars={"oneapi_root": str(root), "state_dir": str(state), "nic": "lo"},
    )
    raw = run_probe_locally(build_script(probe_params(host)))
    facts = parse_facts("node1", raw)
    assert facts.oneapi is not None
    assert (facts.oneapi.version, facts.oneapi.ccl_version) == ("2025.0", "2021.14")
    assert facts.wheels is not None and facts.wheels["torch"].sha256 == "ab" * 32
    assert facts.rendezvous is None  # no peers given: nothing tested
    assert facts.nic is not None and facts.nic.exists
    assert any(a.address == "127.0.0.1" for a in facts.nic.addresses)


def test_sh_fallback_when_python3_is_missing(tmp_path: Path) -> None:
    bin_dir = sh_only_bin(tmp_path)
    if not (bin_dir / "awk").exists():
        pytest.skip("no awk on this machine")
    host, marker = hostile_host(tmp_path)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    raw = run_probe_locally(build_script(probe_params(host, [host])), env=env)
    assert not marker.exists(), "a parameter was executed by a shell"
    assert raw["probe"]["kind"] == "sh"
    assert raw["nic"]["name"] == host.vars["nic"]
    assert raw["disk"]["path"] == host.vars["model_path"]
    assert raw["disk"]["checked"] == str(tmp_path)
    assert raw["gpu_tools"]["xpu_smi_version"] == {"missing": True}
    facts = parse_facts("node1", raw, sent=raw["clock"]["start"], received=raw["clock"]["start"])
    assert facts.probe.kind == "sh"
    assert facts.python_version is None
    assert facts.memory is not None and facts.memory.total_kb > 0
    assert facts.clock is not None and facts.clock.uncertainty >= 1.0  # date +%s resolution


def test_sh_json_strings_survive_quotes_backslashes_and_tabs(tmp_path: Path) -> None:
    """The sh fallback's JSON escaping, on the one value a test can steer: the model path."""
    bin_dir = sh_only_bin(tmp_path)
    nasty = f'{tmp_path}/a "quoted"\\back\tslash'
    host = Host("node1", "127.0.0.1", vars={"model_path": nasty})
    raw = run_probe_locally(build_script(probe_params(host)), env={"PATH": str(bin_dir)})
    assert raw["probe"]["kind"] == "sh"
    assert raw["disk"]["path"] == nasty


def test_a_newline_in_a_parameter_is_refused_before_any_host() -> None:
    host = Host("node1", "127.0.0.1", vars={"nic": "eth0\nrm -rf /"})
    with pytest.raises(InputError, match="newline"):
        build_script(probe_params(host))

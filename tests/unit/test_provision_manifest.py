"""The wheel manifest (control node) and wheels.json (node) formats."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest

from xpufleet.errors import InputError
from xpufleet.nodestate import InstalledWheel, normalize, parse_node_state, render_node_state
from xpufleet.provision.manifest import (
    Manifest,
    WheelEntry,
    load_manifest,
    parse_wheel_filename,
)

SHA = "ab" * 32


def entry(name: str, **kw: object) -> WheelEntry:
    base = dict(
        name=name, version="1.0", filename=f"{name}-1.0-py3-none-any.whl", sha256=SHA, size=3
    )
    base.update(kw)
    return WheelEntry(**base)  # type: ignore[arg-type]


def test_order_is_the_dependency_order_whatever_the_file_says(tmp_path: Path) -> None:
    m = Manifest(
        tmp_path / "manifest.json",
        [entry("extra"), entry("sglang"), entry("vllm"), entry("triton"), entry("torch")],
    )
    assert [w.key for w in m.ordered()] == ["torch", "triton", "vllm", "sglang", "extra"]


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    m = Manifest(tmp_path / "manifest.json")
    m.upsert(entry("torch", features=("xccl",), commit="c21dc11"))
    m.upsert(entry("sglang"))
    m.upsert(entry("torch", version="2.0", features=("xccl",)))  # replaces, never duplicates
    m.save()
    loaded = load_manifest(tmp_path / "manifest.json")
    assert [(w.key, w.version) for w in loaded.ordered()] == [("torch", "2.0"), ("sglang", "1.0")]
    assert loaded.wheels[0].features == ("xccl",) or loaded.wheels[1].features == ("xccl",)


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (lambda w: w.update(sha256="xyz"), "sha256"),
        (lambda w: w.pop("version"), "version"),
        (lambda w: w.update(features=["cuda"]), "features"),
        (lambda w: w.update(colour="blue"), "colour"),
    ],
)
def test_bad_manifest_is_bad_input_naming_the_key(tmp_path: Path, mutate, key: str) -> None:
    item = entry("torch").to_json()
    mutate(item)
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"format": 1, "wheels": [item]}))
    with pytest.raises(InputError) as err:
        load_manifest(path)
    assert err.value.key == key
    assert err.value.file == str(path)


def test_duplicate_and_broken_json_refused(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    item = entry("torch").to_json()
    path.write_text(json.dumps({"wheels": [item, dict(item, name="Torch")]}))
    with pytest.raises(InputError, match="listed twice"):
        load_manifest(path)
    path.write_text('{"wheels": [\n')
    with pytest.raises(InputError) as err:
        load_manifest(path)
    assert err.value.line == 2


def test_absent_manifest_means_no_wheels(tmp_path: Path) -> None:
    assert load_manifest(tmp_path / "nope.json").wheels == []


def test_wheel_filenames() -> None:
    assert parse_wheel_filename("triton-3.2.0+git6fa2562b-cp310-cp310-linux_x86_64.whl") == (
        "triton",
        "3.2.0+git6fa2562b",
    )
    assert parse_wheel_filename("xpufleet_hello-0.1.0-py3-none-any.whl") == (
        "xpufleet-hello",
        "0.1.0",
    )
    with pytest.raises(InputError):
        parse_wheel_filename("torch.tar.gz")
    assert normalize("Py_CPUinfo") == "py-cpuinfo"


def test_node_state_round_trip_and_garbage() -> None:
    state = {"torch": InstalledWheel("torch", "2.7", SHA, "t.whl", "/v/bin/python", "now")}
    assert parse_node_state(render_node_state(state)) == state
    assert parse_node_state("") == {}
    assert parse_node_state("{half") == {}
    assert parse_node_state('{"wheels": []}') == {}


def test_the_node_records_a_wheel_with_the_writer_tested_here(tmp_path: Path) -> None:
    """Provision's verify-and-record script (what the node runs after pip) writes
    wheels.json through nodestate's writer: run it here on an installed distribution."""
    from xpufleet.provision.wheels import _VERIFY_AND_RECORD_PY

    state_file = tmp_path / "state" / "wheels.json"
    state_file.parent.mkdir()
    state_file.write_text(render_node_state({"old": InstalledWheel("old", "1", SHA)}))
    version = importlib.metadata.version("pytest")
    spec = {"name": "pytest", "key": "pytest", "module": "pytest", "version": version,
            "sha256": SHA, "filename": "pytest.whl", "state_file": str(state_file)}  # fmt: skip
    argv = [sys.executable, "-c", _VERIFY_AND_RECORD_PY, json.dumps(spec), "{}"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"version": version, "features": []}
    recorded = parse_node_state(state_file.read_text())
    assert sorted(recorded) == ["old", "pytest"]
    assert (recorded["pytest"].version, recorded["pytest"].sha256) == (version, SHA)
    assert recorded["pytest"].python == sys.executable
    assert state_file.read_text() == render_node_state(recorded)

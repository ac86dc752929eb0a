"""The lab's settings come from one place (config.LabSettings): defaults < the lab_dir
setting < XPUFLEET_LAB_*; faults are declared once, each with its handler."""

from __future__ import annotations

import pytest

from xpufleet.config import LabSettings
from xpufleet.errors import EXIT_BAD_INPUT, InputError
from xpufleet.lab import Lab
from xpufleet.lab.faults import FAULTS, initial_faults
from xpufleet.lab.profile import Fault, NodeSpec


def test_defaults_then_setting_then_environment() -> None:
    assert LabSettings.from_env({}) == LabSettings()
    assert LabSettings.from_env({}, lab_dir="/tmp/x").dir == "/tmp/x"
    env = {"XPUFLEET_LAB_DIR": "/tmp/y", "XPUFLEET_LAB_NET": "127.0.23",
           "XPUFLEET_LAB_PORT": "22322", "XPUFLEET_LAB_PYBASE": "/tmp/pb",
           "XPUFLEET_LAB_KEEP": "1"}  # fmt: skip
    got = LabSettings.from_env(env, lab_dir="/tmp/x")
    assert (got.dir, got.net, got.port, got.pybase, got.keep) == (
        "/tmp/y", "127.0.23", 22322, "/tmp/pb", True)  # fmt: skip


def test_a_bad_port_is_bad_input_naming_the_variable() -> None:
    with pytest.raises(InputError) as err:
        LabSettings.from_env({"XPUFLEET_LAB_PORT": "22x"})
    assert err.value.exit_code == EXIT_BAD_INPUT and "XPUFLEET_LAB_PORT" in str(err.value)


def test_lab_from_env_reads_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XPUFLEET_LAB_DIR", "/tmp/lab-settings-test")
    monkeypatch.setenv("XPUFLEET_LAB_NET", "127.0.99")
    monkeypatch.setenv("XPUFLEET_LAB_PORT", "22999")
    lab = Lab.from_env("ignored-when-the-variable-is-set")
    assert (str(lab.dir), lab.net, lab.port) == ("/tmp/lab-settings-test", "127.0.99", 22999)


def test_start_time_faults_are_the_declared_ones() -> None:
    spec = NodeSpec(faults=tuple(Fault(name, kind.default) for name, kind in FAULTS.items()))
    assert sorted(initial_faults(spec)) == sorted(
        ["old_oneapi", "missing_xpu_smi", "torch_no_xccl", "clock_skew", "dead_node"]
    )

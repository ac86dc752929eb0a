"""The closed environment on the lab: offline nodes, the lock installed exactly, `pip
check` clean, a rerun changing nothing, and the two environment faults (a missing
runtime dependency, a foreign torch shadowing the built one) named by doctor first and
repaired by provision. Builds on the session's provisioned lab (conftest)."""

from __future__ import annotations

from pathlib import Path

import pytest

from xpufleet.doctor import run_doctor
from xpufleet.inventory import load_inventory
from xpufleet.lab import Lab
from xpufleet.lab.envfaults import FOREIGN_TORCH_VERSION, break_env
from xpufleet.lab.wheelhouse import standin_wheelhouse
from xpufleet.provision import ProvisionOptions, run_provision
from xpufleet.results import TaskReport
from xpufleet.transport import Session
from xpufleet.variables import venv_python

pytestmark = pytest.mark.lab

PYTHON = venv_python("/opt/xpufleet/venv")


def results(report: TaskReport, host: str) -> dict[str, tuple[str, str]]:
    return {r.id: (r.status, r.message) for r in report.hosts[host].results}


def provision(lab: Lab, wheels: Path) -> TaskReport:
    hosts = load_inventory(lab.inventory_path).select(None)
    return run_provision(
        hosts, lab.ssh_options(command_timeout=300.0), wheels, forks=8, options=ProvisionOptions()
    )


def test_nodes_are_offline(provisioned_lab: Lab) -> None:
    """A node's pip sees no index and no local package folder: only what provision pushed."""
    host = provisioned_lab.hosts()[0]
    with Session(host, provisioned_lab.ssh_options()) as session:
        out = session.run(
            f"{PYTHON} -m pip download --no-deps -d /tmp/xpufleet-offline orjson 2>&1; true"
        ).stdout
    assert "No matching distribution found for orjson" in out, out


def test_faults_named_by_doctor_and_repaired_by_provision(
    provisioned_lab: Lab, tmp_path: Path
) -> None:
    lab = provisioned_lab
    wheels = tmp_path / "wheels"
    manifest = standin_wheelhouse(wheels)  # the same closed environment (cached)
    assert {"orjson", "fastapi", "pyzmq", "uvloop"} <= {d.name for d in manifest.locked}
    hosts = lab.hosts()
    healed = False
    try:
        with Session(hosts[1], lab.ssh_options()) as session:
            break_env(session, PYTHON, "missing_dependency", "orjson")
        with Session(hosts[2], lab.ssh_options()) as session:
            break_env(session, PYTHON, "foreign_torch")

        doctor = run_doctor(load_inventory(lab.inventory_path).select(None), lab.ssh_options())
        status, message = results(doctor, "node2")["python.imports"]
        assert status == "fail", message
        assert "No module named 'orjson'" in message and "distribution orjson" in message
        status, message = results(doctor, "node3")["torch.xpu"]
        assert status == "fail", message
        assert FOREIGN_TORCH_VERSION in message and "not an XPU build" in message
        assert results(doctor, "node1")["python.imports"][0] == "pass"
        assert results(doctor, "node1")["torch.xpu"][0] == "pass"

        repaired = provision(lab, wheels)
        assert repaired.exit_code() == 0, repaired.to_json()
        status, message = results(repaired, "node2")["provision.wheels.lock"]
        assert status == "changed" and "install orjson" in message, message
        status, message = results(repaired, "node3")["provision.wheels.lock"]
        assert status == "changed" and "remove torch" in message, message
        for name in ("node1", "node4"):
            assert results(repaired, name)["provision.wheels.lock"][0] == "ok"
        for name in repaired.hosts:
            assert results(repaired, name)["provision.wheels.pip_check"][0] == "ok"
            assert results(repaired, name)["provision.wheels.imports"][0] == "ok"
        assert repaired.extra["bytes_sent"] == 0  # orjson's wheel was still in node2's cache

        again = provision(lab, wheels)
        assert {r.status for h in again.hosts.values() for r in h.results} <= {"ok", "skip"}
        after = run_doctor(load_inventory(lab.inventory_path).select(None), lab.ssh_options())
        for name in ("node2", "node3"):
            assert results(after, name)["python.imports"][0] == "pass"
            assert results(after, name)["torch.xpu"][0] == "pass"
        healed = True
    finally:
        if not healed:
            provision(lab, wheels)  # leave the shared provisioned lab whole for later tests

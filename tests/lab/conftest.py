"""Helpers of the lab's own tests (tests/lab/, every module marked `lab`)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from xpufleet.host import Host
from xpufleet.lab import Lab
from xpufleet.transport import CommandResult, Session

#: the invoke of the venv running the tests
INVOKE = str(Path(sys.executable).parent / "invoke")

RunOn = Callable[..., CommandResult]


@pytest.fixture
def hosts(lab: Lab) -> list[Host]:
    """The lab's nodes as Host objects (built directly, no inventory involved)."""
    return lab.hosts()


@pytest.fixture
def on(lab: Lab) -> RunOn:
    """`on(node, command, **run_kwargs)`: one command on node<i> through xpufleet's own
    transport; the exit status is returned, not raised."""

    def run(node: int, command: str, **kwargs: object) -> CommandResult:
        host = lab.hosts()[node - 1]
        with Session(host, lab.ssh_options()) as session:
            return session.run(command, check=False, **kwargs)  # type: ignore[arg-type]

    return run


@pytest.fixture
def invoke_bin() -> str:
    return INVOKE


def _follow_then_interrupt(inventory: Path, env: dict[str, str] | None = None) -> dict[str, object]:
    """`logs --follow --json` until its first tagged line, then ONE Ctrl-C: it must exit 130.
    Its output is read while it exits, as a terminal would (a tool blocked on a full pipe
    cannot exit). If it does not exit, SIGABRT makes faulthandler print every thread's
    stack, and the failure shows where it hangs."""
    proc = subprocess.Popen(
        [INVOKE, "logs", "--follow", "--json", "--hosts", str(inventory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**(env if env is not None else os.environ), "PYTHONFAULTHANDLER": "1"},
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first["host"] in ("node1", "node2") and first["rank"]
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            _, stacks = proc.communicate(timeout=30)
            raise AssertionError(f"logs --follow outlived one Ctrl-C by 60 s:\n{stacks}") from None
        assert proc.returncode == 130
        return first
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def follow_then_interrupt() -> Callable[..., dict[str, object]]:
    """`follow_then_interrupt(inventory, env=None)`: see `_follow_then_interrupt`."""
    return _follow_then_interrupt


@pytest.fixture(scope="session")
def provisioned_lab(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Lab:
    """The session's lab after ONE full `provision` (added by the provision engineer):
    oneAPI env file, venv inheriting the lab's torch, the closed environment (the
    SGLang stand-in wheel and its lock: its runtime dependencies and the lab's pins,
    resolved by pip once per machine, pushed to the offline nodes), SGLang env and
    launch script. Later tests (doctor after provision, launch) build on it."""
    import dataclasses

    from xpufleet.inventory import load_inventory
    from xpufleet.lab.wheelhouse import LAB_PIP_PACKAGES, standin_wheelhouse
    from xpufleet.provision import ProvisionOptions, run_provision

    wheels = tmp_path_factory.mktemp("files-wheels")
    standin_wheelhouse(wheels)
    hosts = [
        h
        if "pip_packages" in h.vars
        else dataclasses.replace(h, vars={**h.vars, "pip_packages": list(LAB_PIP_PACKAGES)})
        for h in load_inventory(lab.inventory_path).select(None)
    ]
    report = run_provision(
        hosts, lab.ssh_options(command_timeout=300.0), wheels, forks=8, options=ProvisionOptions()
    )
    if report.exit_code() != 0:
        failed = [
            f"{name}: {r.id}: {r.message}"
            for name, h in report.hosts.items()
            for r in h.results
            if r.status == "failed"
        ]
        pytest.fail("provisioning the lab failed: " + "; ".join(failed or ["unreachable"]))
    return lab


def _inventory_with(lab: Lab, directory: Path, **overrides: object) -> Path:
    """A copy of the lab's inventory (already sized for a CPU launch: device cpu, gloo,
    a tiny model, each node's HTTP server on its own address) with `overrides` in
    group_vars/all.yaml, which Ansible's precedence puts above the inventory's own vars."""
    path = directory / "inventory.yaml"
    shutil.copy(lab.inventory_path, path)
    (directory / "group_vars").mkdir()
    (directory / "group_vars" / "all.yaml").write_text(yaml.safe_dump(dict(overrides)))
    return path


@pytest.fixture(scope="session")
def inventory_with() -> Callable[..., Path]:
    """`inventory_with(lab, directory, **overrides)`: see _inventory_with."""
    return _inventory_with

"""Helpers of the lab's own tests (tests/lab/, every module marked `lab`)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from xpufleet.host import Host
from xpufleet.lab import Lab
from xpufleet.lab.model import LAB_MODEL
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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """test_bench.py runs right before test_launch.py: the two share the session's one
    tp 8 launch over two nodes (`tp8_two_nodes`), which test_launch.py ends with its stop
    test, so no other module runs while it is up (doctor would name its processes as
    leftovers, a fault could kill them)."""
    bench = [item for item in items if item.path.name == "test_bench.py"]
    rest = [item for item in items if item.path.name != "test_bench.py"]
    at = next((n for n, item in enumerate(rest) if item.path.name == "test_launch.py"), None)
    if bench and at is not None:
        items[:] = rest[:at] + bench + rest[at:]


@pytest.fixture(scope="session")
def launch_inventory(provisioned_lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lab's inventory (with this lab's own launch ports) for the SGLang launches of
    test_bench.py and test_launch.py: the lab's model directory (the real bench client
    loads its tokenizer) served as test_launch.MODEL, a patient ready timeout, and the
    node's devices in reverse card order (test_launch.DEVICE_IDS), so neither start
    order nor device order equals rank order."""
    from test_launch import DEVICE_IDS, MODEL

    return _inventory_with(
        provisioned_lab,
        tmp_path_factory.mktemp("launch-inventory"),
        model_path=f"/models/{LAB_MODEL}",
        model_name=MODEL,
        device_ids=DEVICE_IDS,
        ready_timeout=240,
    )


class SharedLaunch:
    """`invoke launch --tp 8 --nnodes 2` on `inventory`, started at the first `get()`
    and kept until `stop()`: tests that only read from a running server share it."""

    FLAGS = ("--tp", "8", "--nnodes", "2")

    def __init__(self, inventory: Path) -> None:
        self.inventory = inventory
        self.result: tuple[int, dict[str, Any]] | None = None
        #: a launch was started (maybe half-way) and not stopped since
        self.live = False

    def get(self) -> tuple[int, dict[str, Any]]:
        """The launch's exit code and JSON document (launched now if not running)."""
        from test_launch import invoke

        if self.result is None:
            self.live = True
            self.result = invoke(self.inventory, "launch", *self.FLAGS)
        return self.result

    def stop(self) -> tuple[int, dict[str, Any]]:
        """`invoke stop`: its exit code and JSON document; a later `get()` launches anew."""
        from test_launch import invoke

        self.result = None
        self.live = False
        return invoke(self.inventory, "stop")


@pytest.fixture(scope="session")
def tp8_two_nodes(launch_inventory: Path) -> Iterator[SharedLaunch]:
    """The session's ONE SGLang launch of tp 8 over two nodes: test_bench.py measures
    against it, test_launch.py checks it and stops it (see pytest_collection_modifyitems);
    stopped at the end whatever happened."""
    shared = SharedLaunch(launch_inventory)
    try:
        yield shared
    finally:
        if shared.live:
            code, doc = shared.stop()
            assert code == 0, json.dumps(doc)[:4000]

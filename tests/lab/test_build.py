"""`invoke build` on the lab, the whole chain with a small real package: build on a lab
node (pip wheel of tests/data/pkgs/xpufleet_hello), fetch back into a wheels dir with
a manifest entry, lock the pins, push to every (offline) node with provision, install,
import."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from xpufleet.executor import fan_out
from xpufleet.inventory import load_inventory
from xpufleet.provision import ProvisionOptions, run_provision
from xpufleet.provision.manifest import load_manifest
from xpufleet.transport import Session

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "tests" / "data" / "pkgs" / "xpufleet_hello"
INSTALL = "/opt/xpufleet/t-build"
STATE = "/var/lib/xpufleet/t-build"


def invoke(*args: str, wheels: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, INVOKE_XPUFLEET_WHEELS_DIR=str(wheels))
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


@pytest.fixture(scope="module")
def cluster(lab: Any) -> Any:
    def wipe(session: Session) -> None:
        session.run(f"rm -rf {INSTALL} {STATE} /var/tmp/xpufleet-build/xpufleet_hello")

    fan_out(lab.hosts(), wipe, lab.ssh_options())
    yield lab
    fan_out(lab.hosts(), wipe, lab.ssh_options())


def test_build_fetch_push_install_import(cluster: Any, tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    inv = str(cluster.inventory_path)
    built = invoke(
        "build", "--hosts", inv, "--host", "node1", "--source", str(HELLO), "--json", wheels=wheels
    )
    assert built.returncode == 0, built.stderr + built.stdout
    doc = json.loads(built.stdout)
    result, lock = doc["hosts"]["node1"]["results"]
    assert result["id"] == "build.xpufleet_hello" and result["status"] == "changed"

    manifest = load_manifest(wheels / "manifest.json")
    (entry,) = manifest.wheels
    # then the lock: the lab inventory's pins, resolved by pip on the control node
    assert lock["id"] == "build.lock" and lock["status"] == "changed", lock["message"]
    assert {d.name for d in manifest.locked} == {"py-cpuinfo", "msgspec"}
    for dist in manifest.locked:
        assert hashlib.sha256((wheels / dist.filename).read_bytes()).hexdigest() == dist.sha256
    assert (entry.name, entry.version) == ("xpufleet-hello", "0.1.0")
    assert entry.build_host == "node1"
    assert entry.source == "tests/data/pkgs/xpufleet_hello"
    assert entry.commit.startswith("tree-sha256:")
    wheel = wheels / entry.filename
    assert hashlib.sha256(wheel.read_bytes()).hexdigest() == entry.sha256
    assert entry.size == wheel.stat().st_size
    logs = list((ROOT / "runs").glob("build-*/node1-xpufleet_hello.log"))
    assert (
        logs
        and "Successfully built" in logs[-1].read_text()
        or "xpufleet_hello" in logs[-1].read_text()
    )

    hosts = [
        dataclasses.replace(
            h,
            vars={
                **h.vars,
                "install_dir": INSTALL,
                "state_dir": STATE,
                "venv": f"{INSTALL}/venv",
                "pip_packages": [],
                "python_imports": ["xpufleet_hello"],
            },
        )
        for h in load_inventory(cluster.inventory_path).select(None)
    ]
    report = run_provision(
        hosts,
        cluster.ssh_options(command_timeout=300.0),
        wheels,
        forks=8,
        options=ProvisionOptions(),
        tags="python_env,wheels",
    )
    assert report.exit_code() == 0, json.dumps(report.to_json(), indent=1)
    # offline nodes: the locked files and the built wheel went through the relay: one
    # copy per batch of nodes that needed them at once (a batch waits for every host
    # still working), never one per node and batch
    once = sum(d.size for d in manifest.locked) + entry.size
    assert once <= report.extra["bytes_sent"] <= once * len(hosts), (report.extra, once)

    def greet(session: Session) -> str:
        return session.run(
            f"{INSTALL}/venv/bin/python -c "
            "'import xpufleet_hello, socket; print(xpufleet_hello.greet(socket.gethostname()))'"
        ).stdout.strip()

    outcomes = fan_out(cluster.hosts(), greet, cluster.ssh_options())
    for name, outcome in outcomes.items():
        assert outcome.value == f"hello {name} from xpufleet_hello 0.1.0", outcome.error

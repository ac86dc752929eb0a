"""`invoke provision` on the lab: full run, no-op rerun, --check/--diff, cut transfers,
a full disk, the node lock, --fail-fast. Real sshd nodes, real venvs, real pip.

These tests provision into their own directories on each node (`/opt/xpufleet/t-prov`,
`/var/lib/xpufleet/t-prov`) so the lab's shared provisioned state (used by doctor and
launch tests) is left alone.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from xpufleet.host import Host
from xpufleet.inventory import load_inventory
from xpufleet.nodestate import parse_node_state
from xpufleet.provision import ProvisionOptions, run_provision
from xpufleet.provision.lock import acquire_lock, release_lock
from xpufleet.provision.manifest import Manifest, entry_for_file
from xpufleet.results import TaskReport
from xpufleet.transport import Session

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
INSTALL = "/opt/xpufleet/t-prov"
STATE = "/var/lib/xpufleet/t-prov"
#: pins that the lab machine's local package index holds (REFERENCE §1's exact pins
#: are not on this machine's disk; the mechanism is the same)
LAB_PINS = ["py-cpuinfo==9.0.0", "msgspec"]
TOKEN_ENV = "XPUFLEET_TEST_TOKEN"
TOKEN = "hf_t0ken-$(touch /tmp/never)'quoted"


def make_wheel(dest: Path, name: str, version: str, payload: int = 0) -> Path:
    """A real (pure-Python) wheel, made with zipfile; `payload` random bytes make it big."""
    module = name.replace("-", "_")
    files = {f"{module}/__init__.py": f'__version__ = "{version}"\n'.encode()}
    if payload:
        files[f"{module}/blob.bin"] = os.urandom(payload)
    info = f"{module}-{version}.dist-info"
    files[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    )
    files[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: xpufleet-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = ""
    for entry, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record += f"{entry},sha256={digest},{len(data)}\n"
    files[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    path = dest / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for entry, data in files.items():
            archive.writestr(entry, data)
    return path


def add_wheel(wheels: Path, path: Path, **meta: Any) -> None:
    manifest = Manifest(wheels / "manifest.json")
    if manifest.path.exists():
        from xpufleet.provision.manifest import load_manifest

        manifest = load_manifest(manifest.path)
    manifest.upsert(entry_for_file(path, **meta))
    manifest.save()


def wheels_plus(wheels: Path, dest: Path, name: str, payload: int) -> Path:
    """A copy of `wheels` in `dest` with one more wheel, `payload` random bytes big."""
    dest.mkdir()
    for item in wheels.iterdir():
        (dest / item.name).write_bytes(item.read_bytes())
    path = make_wheel(dest, name, "1.0", payload=payload)
    add_wheel(dest, path)
    return path


@pytest.fixture(scope="module")
def cluster(lab: Any) -> Any:
    """The session's lab (tests/lab/conftest.py), with this module's directories wiped."""
    wipe(lab)
    yield lab
    wipe(lab)


def wipe(lab: Any) -> None:
    def work(session: Session) -> None:
        session.run(f"rm -rf {INSTALL} {STATE}")

    from xpufleet.executor import fan_out

    fan_out(lab.hosts(), work, lab.ssh_options())


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A built wheel and its lock (the pins: resolved by pip, cached per machine): the
    nodes are offline, so everything they install comes from here."""
    from xpufleet.lab.wheelhouse import lock_cached
    from xpufleet.provision.manifest import load_manifest

    directory = tmp_path_factory.mktemp("wheels")
    add_wheel(directory, make_wheel(directory, "xpufleet-hello", "0.1.0"), import_name="")
    lock_cached(load_manifest(directory / "manifest.json"), LAB_PINS)
    return directory


def hosts_of(
    lab: Any, per_host: dict[str, dict[str, Any]] | None = None, **extra: Any
) -> list[Host]:
    inventory = load_inventory(lab.inventory_path)
    out = []
    for host in inventory.select(None):
        merged = {
            **host.vars,
            "install_dir": INSTALL,
            "state_dir": STATE,
            "venv": f"{INSTALL}/venv",
            "pip_packages": LAB_PINS,
            "python_imports": ["xpufleet_hello"],
            "secret_env": [TOKEN_ENV],
            **extra,
            **(per_host or {}).get(host.name, {}),
        }
        out.append(dataclasses.replace(host, vars=merged))
    return out


def provision(
    lab: Any,
    wheels: Path,
    hosts: list[Host] | None = None,
    *,
    transfers: Callable[..., Any] | None = None,
    forks: int = 8,
    **options: Any,
) -> TaskReport:
    kwargs: dict[str, Any] = {}
    if transfers is not None:
        kwargs["transfers"] = transfers
    tags = options.pop("tags", None)
    return run_provision(
        hosts or hosts_of(lab),
        lab.ssh_options(command_timeout=300.0),
        wheels,
        forks=forks,
        options=ProvisionOptions(**options),
        tags=tags,
        **kwargs,
    )


def statuses(report: TaskReport, host: str | None = None) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, h in report.hosts.items():
        if host is None or name == host:
            for r in h.results:
                out[f"{name}:{r.id}"] = r.status
    return out


def run_on(lab: Any, node: str, command: str) -> str:
    host = next(h for h in lab.hosts() if h.name == node)
    with Session(host, lab.ssh_options()) as session:
        return session.run(command, check=False).stdout


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)


def test_full_provision_then_noop(cluster: Any, wheels: Path) -> None:
    first = provision(cluster, wheels)
    assert first.exit_code() == 0, json.dumps(first.to_json(), indent=1)
    assert set(first.hosts) == {h.name for h in cluster.hosts()}
    for name in first.hosts:
        got = statuses(first, name)
        assert got[f"{name}:provision.python_env.env"] == "changed"
        assert got[f"{name}:provision.wheels.xpufleet-hello"] == "changed"
    # the lock's wheels and the built one travel through the relay: one copy per relay
    # (a host the relay missed gets a direct push), never one per node
    from xpufleet.provision.manifest import load_manifest

    manifest = load_manifest(wheels / "manifest.json")
    sizes = {"lock": sum(d.size for d in manifest.locked)}  # at most: see below
    sizes.update({w.key: w.size for w in manifest.wheels})
    copies = {}
    for key in sizes:
        messages = [
            r.message
            for h in first.hosts.values()
            for r in h.results
            if r.id == f"provision.wheels.{key}"
        ]
        assert any("relayed from" in m for m in messages), messages
        copies[key] = sum("relayed from control node" in m or "direct" in m for m in messages)
        assert 1 <= copies[key] < len(first.hosts), messages
    # (the lock pushes only what the inherited base environment lacks: at most its size)
    assert 0 < first.extra["bytes_sent"] <= sum(copies[k] * sizes[k] for k in sizes)
    # the secret never shows up in the report
    assert TOKEN not in json.dumps(first.to_json())

    # every node: the wheel imports from the venv, torch is inherited, files are right
    nics = {h.name: h.vars["nic"] for h in hosts_of(cluster)}  # the lab's fabric NICs
    for host in cluster.hosts():
        out = run_on(
            cluster,
            host.name,
            f"{INSTALL}/venv/bin/python -c 'import xpufleet_hello, torch, cpuinfo, msgspec; "
            "print(xpufleet_hello.__version__, torch.__version__)'; "
            f"stat -c %a {INSTALL}/env/secrets.sh; bash -c '. {INSTALL}/env/sglang.sh; "
            f'echo "$GLOO_SOCKET_IFNAME|${TOKEN_ENV}|$VIRTUAL_ENV"\'; '
            f"cat {STATE}/wheels.json",
        )
        lines = out.splitlines()
        assert lines[0].startswith("0.1.0 2.13.0"), out
        assert lines[1] == "600"
        assert lines[2] == f"{nics[host.name]}|{TOKEN}|{INSTALL}/venv"
        recorded = parse_node_state("\n".join(lines[3:]))
        assert recorded["xpufleet-hello"].version == "0.1.0"
        assert not Path("/tmp/never").exists()

    second = provision(cluster, wheels)
    changed = {k: v for k, v in statuses(second).items() if v not in ("ok", "skip")}
    assert changed == {}, json.dumps(second.to_json(), indent=1)
    assert second.extra["bytes_sent"] == 0


def test_check_and_diff_change_nothing(cluster: Any, wheels: Path) -> None:
    hosts = hosts_of(cluster, ccl_allreduce="ring")
    before = run_on(cluster, "node1", f"sha256sum {INSTALL}/env/sglang.sh")
    report = provision(cluster, wheels, hosts, check=True, diff=True)
    assert report.exit_code() == 0
    env = next(r for r in report.hosts["node1"].results if r.id == "provision.sglang.env_file")
    assert env.status == "changed" and env.message.startswith("would update")
    assert "+export CCL_ALLREDUCE=ring" in env.data["diff"]
    others = [r for r in report.hosts["node1"].results if r.status == "changed"]
    assert [r.id for r in others] == ["provision.sglang.env_file"]
    assert run_on(cluster, "node1", f"sha256sum {INSTALL}/env/sglang.sh") == before
    # and for real: only that file changes, then nothing
    assert provision(cluster, wheels, hosts).exit_code() == 0
    again = provision(cluster, wheels, hosts)
    assert {v for v in statuses(again).values()} <= {"ok", "skip"}


def _kill_receiver(marker: str, address: str, port: int) -> bool:
    """Kill the sshd session process that feeds node `address`'s receiver of `marker`:
    the TCP connection really drops in the middle of the transfer. Every node runs the
    same receiver command, so the node is told apart by the session's SSH_CONNECTION."""
    server_end = f" {address} {port}".encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            if marker not in cmdline or ".part" not in cmdline:
                continue
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            connection = next((e for e in environ if e.startswith(b"SSH_CONNECTION=")), b"")
            if not connection.endswith(server_end):
                continue
            stat = Path(f"/proc/{pid}/stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            os.kill(parent, signal.SIGKILL)
            return True
        except (OSError, ValueError, IndexError):
            continue
    return False


def test_transfer_cut_off_half_way_leaves_nothing_broken_and_rerun_converges(
    cluster: Any, wheels: Path, tmp_path: Path
) -> None:
    big_dir = tmp_path / "wheels"
    big = wheels_plus(wheels, big_dir, "xpufleet-big", payload=12_000_000)
    killed: list[int] = []

    @contextlib.contextmanager
    def cut_node1(host: str, label: str, total: int) -> Iterator[Callable[[int], None]]:
        seen = 0

        def advance(n: int) -> None:
            nonlocal seen
            seen += n
            if host == "node1" and not killed and seen >= total // 3:
                if _kill_receiver("xpufleet_big", cluster.node_address(1), cluster.port):
                    killed.append(seen)

        yield advance

    # the direct push (one copy per node; also the relay's fallback) is what is cut here
    direct = hosts_of(cluster, wheel_push="direct")
    report = provision(cluster, big_dir, direct, transfers=cut_node1, tags="wheels")
    assert killed, "the transfer to node1 was never cut"
    step = next(r for r in report.hosts["node1"].results if r.id == "provision.wheels.xpufleet-big")
    assert step.status == "failed"
    assert "cut off" in step.message or "lost" in step.message
    assert step.runbook == "docs/runbooks/provision.md#interrupted-transfer"
    # the other nodes went on and finished
    for name in ("node2", "node3", "node4"):
        assert statuses(report, name)[f"{name}:provision.wheels.xpufleet-big"] == "changed", [
            (r.id, r.message) for r in report.hosts[name].results if r.status == "failed"
        ]
    # node1: no half file under any name, nothing installed, nothing recorded, no lock
    out = run_on(
        cluster,
        "node1",
        f"ls -a {STATE}/wheels; echo ---; "
        f"{INSTALL}/venv/bin/python -c 'import xpufleet_big' 2>&1 | tail -1; echo ---; "
        f"cat {STATE}/wheels.json; echo ---; ls {STATE}/lock 2>&1",
    )
    listing, imported, recorded, lock = out.split("---\n")
    assert "xpufleet_big" not in listing, listing
    assert "ModuleNotFoundError" in imported
    assert "xpufleet-big" not in parse_node_state(recorded)
    assert "No such file" in lock

    rerun = provision(cluster, big_dir, direct, tags="wheels")
    assert rerun.exit_code() == 0
    assert statuses(rerun, "node1")["node1:provision.wheels.xpufleet-big"] == "changed"
    assert statuses(rerun, "node2")["node2:provision.wheels.xpufleet-big"] == "ok"
    assert rerun.extra["bytes_sent"] == big.stat().st_size  # node1 only
    final = provision(cluster, big_dir, tags="wheels")
    assert {v for v in statuses(final).values()} <= {"ok", "skip"}
    assert final.extra["bytes_sent"] == 0


def test_wheels_travel_through_the_relay_one_copy_for_every_node(
    cluster: Any, wheels: Path, tmp_path: Path
) -> None:
    relay_dir = tmp_path / "wheels"
    wheel = wheels_plus(wheels, relay_dir, "xpufleet-relayed", payload=4_000_000)
    report = provision(cluster, relay_dir, tags="wheels")
    assert report.exit_code() == 0
    steps = {
        name: next(r for r in h.results if r.id == "provision.wheels.xpufleet-relayed")
        for name, h in report.hosts.items()
    }
    assert {s.status for s in steps.values()} == {"changed"}
    relayed = [name for name, s in steps.items() if "relayed from" in s.message]
    assert len(relayed) >= 2, [s.message for s in steps.values()]
    # one copy from the control node per relay batch, not one per node
    batches = sum(1 for s in steps.values() if "relayed from control node" in s.message)
    direct = sum(1 for s in steps.values() if "direct" in s.message)
    assert report.extra["bytes_sent"] == (batches + direct) * wheel.stat().st_size
    assert batches + direct < len(steps)
    assert (
        statuses(provision(cluster, relay_dir, tags="wheels")).get(
            "node1:provision.wheels.xpufleet-relayed"
        )
        == "ok"
    )


def test_full_disk_mid_transfer(cluster: Any, wheels: Path, tmp_path: Path) -> None:
    """node2's wheel cache on the lab's full_disk tmpfs (/models): the write fails, the
    step names the cause, nothing is installed; after the fault heals a rerun converges."""
    disk_dir = tmp_path / "wheels"
    disk_dir.mkdir()
    for item in wheels.iterdir():
        (disk_dir / item.name).write_bytes(item.read_bytes())
    add_wheel(disk_dir, make_wheel(disk_dir, "xpufleet-disk", "1.0", payload=3_000_000))
    hosts = hosts_of(cluster, per_host={"node2": {"wheel_cache_dir": "/models/xpufleet-wheels"}})
    with cluster.fault("node2", "full_disk"):
        report = provision(cluster, disk_dir, hosts, tags="wheels")
        failed = [r for r in report.hosts["node2"].results if r.status == "failed"]
        assert [r.id for r in failed] in (
            ["provision.wheels.cache_dir"],
            ["provision.wheels.xpufleet-disk"],
        )
        assert "No space left on device" in failed[0].message
        assert statuses(report, "node3")["node3:provision.wheels.xpufleet-disk"] == "changed"
        # node2 said why at once and kept forwarding: nobody after it needed a direct push
        pushed = [
            r.message
            for h in report.hosts.values()
            for r in h.results
            if r.id == "provision.wheels.xpufleet-disk" and r.status == "changed"
        ]
        assert pushed and not [m for m in pushed if "direct push" in m], pushed
        imported = run_on(
            cluster, "node2", f"{INSTALL}/venv/bin/python -c 'import xpufleet_disk' 2>&1"
        )
        assert "ModuleNotFoundError" in imported
    healed = provision(cluster, disk_dir, hosts, tags="wheels")
    assert healed.exit_code() == 0
    assert statuses(healed, "node2")["node2:provision.wheels.xpufleet-disk"] == "changed"
    run_on(cluster, "node2", "rm -rf /models/xpufleet-wheels")


def test_lock_refuses_a_concurrent_run(cluster: Any, wheels: Path) -> None:
    node3 = next(h for h in hosts_of(cluster) if h.name == "node3")
    with Session(node3, cluster.ssh_options()) as session:
        held = acquire_lock(session, "launch", state_dir=STATE)
        try:
            report = provision(cluster, wheels)
        finally:
            release_lock(session, held)
    node3_results = report.hosts["node3"].results
    assert [r.id for r in node3_results] == ["provision.lock"]
    assert "locked by launch" in node3_results[0].message
    assert node3_results[0].runbook == "docs/runbooks/provision.md#lock-held"
    assert report.exit_code() == 1
    assert "failed" not in {v for k, v in statuses(report).items() if not k.startswith("node3")}
    assert provision(cluster, wheels).exit_code() == 0  # released: runs again


def test_fail_fast_stops_the_others(cluster: Any, wheels: Path) -> None:
    broken = {"node1": {"oneapi_root": "/opt/intel/no-such-oneapi"}}
    hosts = hosts_of(cluster, per_host=broken)
    report = provision(cluster, wheels, hosts, fail_fast=True, forks=1)
    tree = statuses(report, "node1")["node1:provision.oneapi.tree"]
    assert tree == "failed"
    msg = next(r.message for r in report.hosts["node1"].results if r.status == "failed")
    assert "no oneAPI at /opt/intel/no-such-oneapi" in msg
    for name in ("node2", "node3", "node4"):
        assert set(statuses(report, name).values()) == {"skip"}
    # without --fail-fast one bad node does not stop the others
    report = provision(cluster, wheels, hosts, forks=1)
    assert report.exit_code() == 1
    assert "failed" not in statuses(report, "node2").values()
    assert statuses(report, "node2")["node2:provision.sglang.launch_script"] == "ok"


def test_cli_check_json_and_bad_tag(cluster: Any) -> None:
    invoke = [sys.executable, "-m", "invoke"]
    inv = str(cluster.inventory_path)
    bad = subprocess.run(
        [*invoke, "provision", "--hosts", inv, "--tags", "nope"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2, bad.stderr
    assert "unknown tag(s) nope" in bad.stderr
    done = subprocess.run(
        [*invoke, "provision", "--hosts", inv, "--check", "--json", "--tags", "oneapi"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    doc = json.loads(done.stdout)
    assert doc["task"] == "provision" and doc["check"] is True
    assert set(doc["hosts"]) == {h.name for h in cluster.hosts()}
    ids = {r["id"] for r in doc["hosts"]["node1"]["results"]}
    assert ids == {"provision.oneapi.tree", "provision.oneapi.env_dir", "provision.oneapi.env_file"}
    assert done.returncode == 0, done.stderr

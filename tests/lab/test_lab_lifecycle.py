"""lab.up / lab.down / lab.status on a lab of their own (next to the session's lab: same
address prefix, SSH port + 1, a temporary directory), so the shared lab is never
brought down by these tests."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from xpufleet.config import PROJECT_ROOT
from xpufleet.executor import fan_out
from xpufleet.lab import Lab, pid_alive
from xpufleet.lab.processes import wait_for
from xpufleet.transport import Session

pytestmark = pytest.mark.lab


@pytest.fixture
def own_lab(tmp_path: Path) -> Iterator[Lab]:
    session_lab = Lab.from_env()
    lab = Lab(tmp_path / "lab", session_lab.net, session_lab.port + 1)
    try:
        yield lab
    finally:
        lab.down()


def _pids_in(namespaces: set[int]) -> list[int]:
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if os.stat(f"/proc/{entry.name}/ns/mnt").st_ino in namespaces:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""  # gone meanwhile


def _holders(lab: Lab) -> dict[str, int | None]:
    return {n.name: n.holder for n in lab.status().nodes}


def test_up_converges_and_down_leaves_nothing_behind(own_lab: Lab) -> None:
    lab = own_lab
    assert lab.up(nodes=2).all_up
    first = _holders(lab)
    assert _holders(lab) == first and lab.up(nodes=2).all_up and _holders(lab) == first
    grown = lab.up(nodes=3)
    assert grown.all_up and len(grown.nodes) == 3
    assert {k: v for k, v in _holders(lab).items() if k != "node3"} == first
    lab.inject(1, "blocked_port")
    lab.inject(2, "full_disk")
    with Session(lab.hosts()[2], lab.ssh_options()) as session:
        session.run("setsid sleep 600 >/dev/null 2>&1 < /dev/null &")
    namespaces = {
        os.stat(f"/proc/{n.holder}/ns/mnt").st_ino for n in lab.status().nodes if n.holder
    }
    assert len(namespaces) == 3
    assert _eventually(  # setsid forks before it execs sleep: wait for the exec
        lambda: any(_cmdline(pid).startswith(b"sleep\x00600") for pid in _pids_in(namespaces))
    )
    lab.state_path.unlink()  # as after a crash of the controlling process
    assert not lab.status().all_up
    assert lab.down() > 0
    assert _pids_in(namespaces) == []
    rules = subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout
    assert lab.tag not in rules
    assert str(lab.dir) not in Path("/proc/self/mountinfo").read_text()
    assert not (lab.node_dir(1) / "fs").exists()
    assert (lab.node_dir(1) / "ssh_host_ed25519_key").exists()  # known_hosts stays valid
    assert not lab.status().running


def _eventually(condition: Callable[[], bool], limit: float = 10.0) -> bool:
    """The condition, polled until it holds or `limit` seconds pass (a wait, not a timing test)."""
    return wait_for(condition, limit)


def test_up_restarts_nodes_whose_processes_died(own_lab: Lab) -> None:
    lab = own_lab
    lab.up(nodes=2)
    victim = lab.status().nodes[1]
    os.kill(victim.holder or 0, signal.SIGKILL)
    os.kill(victim.sshd or 0, signal.SIGKILL)
    # SIGKILL is delivered asynchronously: wait until both are gone
    assert _eventually(lambda: not pid_alive(victim.holder) and not pid_alive(victim.sshd))
    assert [n.state for n in lab.status().nodes] == ["up", "gone"]
    assert lab.up(nodes=2).all_up
    assert lab.status().nodes[0].holder == _holders(lab)["node1"]


def test_thirty_two_nodes_come_up(own_lab: Lab) -> None:
    status = own_lab.up(nodes=32)
    assert status.all_up and len(status.nodes) == 32
    outcomes = fan_out(
        own_lab.hosts(), lambda s: s.run("hostname").stdout.strip(), own_lab.ssh_options()
    )
    assert sorted(o.value for o in outcomes.values()) == sorted(f"node{i}" for i in range(1, 33))


def _invoke(lab: Lab, invoke_bin: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "XPUFLEET_LAB_DIR": str(lab.dir),
        "XPUFLEET_LAB_NET": lab.net,
        "XPUFLEET_LAB_PORT": str(lab.port),
    }
    return subprocess.run(
        [invoke_bin, *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_cli_up_status_down(own_lab: Lab, invoke_bin: str, tmp_path: Path) -> None:
    none = _invoke(own_lab, invoke_bin, "lab.status")
    assert none.returncode == 1 and "no lab" in none.stderr and "down" in none.stderr
    profile = tmp_path / "profile.yaml"
    profile.write_text("count: 2\nnodes:\n  node2:\n    faults: [dead_node]\n")
    up = _invoke(own_lab, invoke_bin, "lab.up", "--profile", str(profile))
    assert up.returncode == 0, up.stderr
    status = _invoke(own_lab, invoke_bin, "lab.status")
    assert status.returncode == 1 and "dead_node" in status.stderr
    assert "node2" in status.stderr and "down" in status.stderr
    assert _invoke(own_lab, invoke_bin, "lab.up", "--nodes", "2").returncode == 0  # healed
    assert _invoke(own_lab, invoke_bin, "lab.status").returncode == 0
    down = _invoke(own_lab, invoke_bin, "lab.down")
    assert down.returncode == 0 and "stopped" in down.stderr
    assert _invoke(own_lab, invoke_bin, "lab.status").returncode == 1


def test_cli_refuses_a_bad_profile_before_starting_anything(
    own_lab: Lab, invoke_bin: str, tmp_path: Path
) -> None:
    profile = tmp_path / "bad.yaml"
    profile.write_text("count: 2\ndefaults:\n  cards: four\n")
    proc = _invoke(own_lab, invoke_bin, "lab.up", "--profile", str(profile))
    assert proc.returncode == 2
    assert f"{profile}:3" in proc.stderr and "defaults.cards" in proc.stderr
    assert not own_lab.state_path.exists()

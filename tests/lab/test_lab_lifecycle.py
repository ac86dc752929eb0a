"""lab.up / lab.down / lab.status on a lab of their own (next to the session's lab: same
address prefix, SSH port + 1, a temporary directory), so the shared lab is never
brought down by these tests. The killed-lab tests take a net of their own (`_spare_net`):
they remove what is named after a net, which labs on one net share."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from xpufleet.config import PROJECT_ROOT
from xpufleet.executor import fan_out
from xpufleet.inventory import load_inventory
from xpufleet.lab import Lab, LabError, bastion, pid_alive
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


def _spare_net(net: str) -> str:
    """A net beside the session's, no other lab's: 127.X.Y -> 127.X.(Y xor 128)."""
    prefix, y = net.rsplit(".", 1)
    return f"{prefix}.{int(y) ^ 128}"


def _net_left(lab: Lab) -> list[str]:
    """What of lab's net is on the machine: fabric NICs, accounts, iptables rules."""
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    prefix = lab.fabric_nic(0)[3:-1]
    left = [w.split("@")[0] for w in links.split() if w[3:].startswith(prefix) and w[:3] == "hsn"]
    users = subprocess.run(["getent", "passwd"], capture_output=True, text=True).stdout
    left += [
        line.split(":")[0]
        for line in users.splitlines()
        if line.startswith(bastion.accounts(lab.net).group)
    ]
    rules = subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout
    return left + [
        line for line in rules.splitlines() if f"{bastion.private_net(lab.net)}." in line
    ]


@pytest.fixture
def killed_and_next(tmp_path: Path) -> Iterator[tuple[Lab, Lab]]:
    """Two labs of one directory each on the same spare net and port: the first to be
    killed (its directory deleted, as a fresh clone has none), the next one after it."""
    session = Lab.from_env()
    net = _spare_net(session.net)
    killed = Lab(tmp_path / "killed", net, session.port + 2)
    after = Lab(tmp_path / "next", net, session.port + 2)
    try:
        yield killed, after
    finally:
        after.down()
        killed.down()
    assert _net_left(after) == []


def test_a_killed_lab_does_not_poison_the_next_on_its_net(
    killed_and_next: tuple[Lab, Lab], tmp_path: Path
) -> None:
    """A test run SIGKILLed leaves its lab running (nodes and bastion are daemons), and a
    fresh clone has no lab dir: the next lab.up on the same net takes it all away."""
    killed, after = killed_and_next
    killed.up(nodes=2)
    killed.bastion_up()
    holders = [n.holder for n in killed.status().nodes]
    shutil.rmtree(killed.dir)

    status = after.up(nodes=2)
    assert status.all_up, status.to_json()
    said = "\n".join(status.removed)
    assert f"node1, node2 of the lab in {killed.dir}" in said
    assert "bastion sshd" in said and "fabric NICs" in said and "iptables rule" in said
    assert not any(pid_alive(pid) for pid in holders)
    login = after.bastion_up()
    # node1's fabric NIC carries its address (what doctor's net.nic reads)
    with Session(after.hosts()[0], after.ssh_options()) as session:
        shown = session.run(f"ip -o -4 addr show dev {after.fabric_nic(1)}").stdout
    assert f"{after.fabric_address(1)}/24" in shown
    # and the bastion lets the lab's sudo account through to every node
    inventory = tmp_path / "bastion.yaml"
    inventory.write_text(bastion.inventory(after, user=login.ops))
    hosts = list(load_inventory(inventory).hosts.values())
    outcomes = fan_out(
        hosts, lambda s: s.run("hostname; id -un").stdout.split(), after.ssh_options()
    )
    assert {n: o.value for n, o in outcomes.items()} == {
        "node1": ["node1", login.ops],
        "node2": ["node2", login.ops],
    }


def test_a_running_lab_with_its_directory_is_named_not_killed(
    killed_and_next: tuple[Lab, Lab],
) -> None:
    """Another lab on the same net and port whose directory still holds its state may be
    in use: the next lab.up refuses at once, naming it, and leaves it running."""
    running, after = killed_and_next
    running.up(nodes=1)
    with pytest.raises(LabError, match=f"directory {running.dir} is still there"):
        after.up(nodes=1)
    assert running.status().all_up


def test_down_after_a_kill_without_the_lab_dir(killed_and_next: tuple[Lab, Lab]) -> None:
    """lab.down of a lab whose directory went (its nodes' sshd have lower pids than their
    holders) still stops every node and removes the net's NICs, accounts and rules."""
    killed, _ = killed_and_next
    killed.up(nodes=2)
    killed.bastion_up()
    pids = [pid for n in killed.status().nodes for pid in (n.holder, n.sshd)]
    shutil.rmtree(killed.dir)
    assert killed.down() >= 4
    assert not any(pid_alive(pid) for pid in pids)
    assert _net_left(killed) == []

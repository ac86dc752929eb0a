"""SSH against the lab: host keys are verified, a dead node is named and the rest go on."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from xpufleet.config import PROJECT_ROOT
from xpufleet.errors import (
    ConnectionRefused,
    HostKeyChanged,
    HostKeyUnknown,
    Interrupted,
    ProtocolError,
)
from xpufleet.executor import SessionPool
from xpufleet.host import Host
from xpufleet.lab import Lab
from xpufleet.lab.sshd import ed25519_keypair
from xpufleet.transport import Session, known_hosts_name

pytestmark = pytest.mark.lab


def _invoke(invoke_bin: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [invoke_bin, *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
    )


def _with_known_hosts(host: Host, path: Path) -> Host:
    return replace(host, vars={**host.vars, "known_hosts": str(path)})


def test_dead_node_exits_3_while_the_others_complete(lab: Lab, invoke_bin: str) -> None:
    with lab.fault(2, "dead_node"):
        proc = _invoke(invoke_bin, "run", "hostname", "--hosts", str(lab.inventory_path), "--json")
    assert proc.returncode == 3, proc.stderr
    report = json.loads(proc.stdout)["hosts"]
    assert report["node2"]["reachable"] is False
    assert "refused" in report["node2"]["error"]
    done = {name: h["results"][0]["message"] for name, h in report.items() if name != "node2"}
    assert done == {"node1": "node1", "node3": "node3", "node4": "node4"}


def test_dead_node_refuses_connections_until_healed(lab: Lab, hosts: list[Host]) -> None:
    with lab.fault(3, "dead_node"):
        assert [n.state for n in lab.status().nodes] == ["up", "up", "down", "up"]
        with pytest.raises(ConnectionRefused), Session(hosts[2], lab.ssh_options()):
            pass
    with Session(hosts[2], lab.ssh_options()) as session:
        assert session.run("hostname").stdout.strip() == "node3"


def test_unknown_host_key_is_refused(lab: Lab, hosts: list[Host], tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    target = known_hosts_name(hosts[0]) + " "
    lines = [ln for ln in lab.known_hosts.read_text().splitlines() if not ln.startswith(target)]
    known.write_text("\n".join(lines) + "\n")
    with pytest.raises(HostKeyUnknown) as caught:
        Session(_with_known_hosts(hosts[0], known), lab.ssh_options()).open()
    assert "UNKNOWN" in str(caught.value) and "invoke trust" in str(caught.value)
    with Session(_with_known_hosts(hosts[1], known), lab.ssh_options()) as session:
        assert session.run("hostname").stdout.strip() == "node2"


def test_changed_host_key_is_refused(lab: Lab, hosts: list[Host], tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    _, other_key = ed25519_keypair()
    known.write_text(f"{known_hosts_name(hosts[0])} {other_key}\n")
    with pytest.raises(HostKeyChanged) as caught:
        Session(_with_known_hosts(hosts[0], known), lab.ssh_options()).open()
    assert "CHANGED" in str(caught.value)


def test_trust_adds_the_nodes_keys(lab: Lab, invoke_bin: str, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    inventory = yaml.safe_load(lab.inventory_path.read_text())
    inventory["all"]["vars"]["known_hosts"] = str(known)
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump(inventory))
    first = _invoke(invoke_bin, "run", "true", "--hosts", str(path))
    assert first.returncode == 3  # every key unknown
    trusted = _invoke(invoke_bin, "trust", "--yes", "--hosts", str(path))
    assert trusted.returncode == 0, trusted.stderr
    # the lab's file also files each node under its address behind the bastion
    direct = tuple(f"[{h.address}]:" for h in lab.hosts())
    expected = sorted(
        ln for ln in lab.known_hosts.read_text().splitlines() if ln.startswith(direct)
    )
    assert sorted(known.read_text().splitlines()) == expected
    again = _invoke(invoke_bin, "run", "hostname", "--hosts", str(path))
    assert again.returncode == 0, again.stderr


def test_run_json_names_the_host_and_the_first_bytes_of_a_garbled_answer(
    lab: Lab, hosts: list[Host]
) -> None:
    with Session(hosts[0], lab.ssh_options()) as session:
        assert session.run_json("echo '{\"ok\": [1]}'") == {"ok": [1]}
        assert session.run_json("echo warming up; echo 7", last_line=True) == 7
        with pytest.raises(ProtocolError) as caught:
            session.run_json("echo 'Traceback (most recent call last):'")
    assert caught.value.host == hosts[0].name
    assert "expected JSON, got 'Traceback (most recent call last):" in str(caught.value)


def test_ctrl_c_ends_every_running_command_before_the_pool_lets_go(
    lab: Lab, hosts: list[Host]
) -> None:
    """The interrupted map returns only after each host's command has been abandoned
    (so no worker is inside paramiko when the sessions close), and the next map works."""
    started: list[str] = []
    ended: dict[str, BaseException] = {}
    all_started = threading.Event()

    def work(session: Session) -> None:
        def seen(data: bytes) -> None:
            started.append(session.host.name)
            if len(started) == 2:
                all_started.set()

        try:
            session.run("echo started; sleep 60", stdout_to=seen)
        except Interrupted as exc:
            ended[session.host.name] = exc

    def interrupt() -> None:
        if all_started.wait(120):  # a real SIGINT: it wakes the main thread's wait
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    with SessionPool(hosts[:2], lab.ssh_options(), forks=2) as pool:
        threading.Thread(target=interrupt, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            pool.map(work)
        assert sorted(ended) == sorted(h.name for h in hosts[:2])
        again = pool.map(lambda s: s.run("echo again").stdout.strip())
    assert [o.value for o in again.values()] == ["again", "again"]

"""Each lab node's real OpenSSH server: its keys (kept across up/down, so known_hosts
stays valid), the lab's known_hosts, and starting/stopping the listening sshd inside the
node's namespaces."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from ..host import Host
from ..transport import known_hosts_name
from . import bastion, firewall
from .processes import (
    CLEAN_ENV,
    KILL_TIMEOUT,
    START_TIMEOUT,
    kill_all,
    pid_alive,
    read_pid,
    wait_for,
)
from .profile import LabError

if TYPE_CHECKING:
    from .cluster import Lab

SSHD = "/usr/sbin/sshd"


def ed25519_keypair() -> tuple[bytes, str]:
    """(OpenSSH private key bytes, 'ssh-ed25519 AAAA...' public line), made in-process."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return private, public.decode()


def write_keypair(private_file: Path, comment: str) -> None:
    """A new ed25519 key at `private_file` (0600) and its `.pub` beside it."""
    private_file.parent.mkdir(parents=True, exist_ok=True)
    private, public = ed25519_keypair()
    private_file.write_bytes(private)
    private_file.chmod(0o600)
    Path(f"{private_file}.pub").write_text(f"{public} {comment}\n")


def ensure_keys(lab: Lab, count: int) -> None:
    """The lab's client key (authorized on every node) and each node's host key."""
    lab.dir.mkdir(parents=True, exist_ok=True)
    if not lab.key_file.exists():
        write_keypair(lab.key_file, "xpufleet-lab")
    public = Path(f"{lab.key_file}.pub").read_text().strip()
    if not lab.authorized_keys.exists() or lab.authorized_keys.read_text().strip() != public:
        lab.authorized_keys.write_text(public + "\n")
        lab.authorized_keys.chmod(0o600)
    for i in range(1, count + 1):
        key = lab.node_dir(i) / "ssh_host_ed25519_key"
        if not key.exists():
            write_keypair(key, f"node{i}")


def write_known_hosts(lab: Lab, count: int) -> None:
    """Every node's host key under its addresses (and the bastion's, when it has one)."""
    lines = []
    for i in range(1, count + 1):
        pub = (lab.node_dir(i) / "ssh_host_ed25519_key.pub").read_text().split()
        for address in (lab.node_address(i), lab.private_address(i)):
            if address:
                host = Host(f"node{i}", address, lab.port)
                lines.append(f"{known_hosts_name(host)} {pub[0]} {pub[1]}")
    login_key = bastion.bastion_dir(lab) / "ssh_host_ed25519_key.pub"
    if login_key.exists():
        pub = login_key.read_text().split()
        host = Host("bastion", bastion.bastion_address(lab), lab.port)
        lines.append(f"{known_hosts_name(host)} {pub[0]} {pub[1]}")
    lab.known_hosts.write_text("\n".join(lines) + "\n")


def argv(lab: Lab, index: int) -> list[str]:
    node = lab.node_dir(index)
    return [SSHD, "-f", str(node / "sshd_config"), "-E", str(node / "node.log")]


def start(lab: Lab, index: int, holder: int) -> None:
    """Start node<index>'s sshd inside its namespaces (after dead_node, or a restart)."""
    pid_file = lab.node_dir(index) / "sshd.pid"
    pid_file.unlink(missing_ok=True)
    command = ["nsenter", f"--target={holder}", "--mount", "--uts", "--", *argv(lab, index)]
    with (lab.node_dir(index) / "node.log").open("a") as log:
        proc = subprocess.run(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=CLEAN_ENV, cwd="/"
        )
    if proc.returncode != 0:
        raise LabError(f"node{index}: sshd failed to start (exit {proc.returncode})")
    if not wait_for(lambda: read_pid(pid_file) is not None, START_TIMEOUT):
        raise LabError(f"node{index}: sshd did not come up")
    pid = read_pid(pid_file)
    if pid:
        firewall.join_node_cgroup(lab, index, [pid])


def stop(lab: Lab, index: int) -> None:
    """Stop only the listening sshd; open sessions go on (used to reload its config)."""
    pid_file = lab.node_dir(index) / "sshd.pid"
    pid = read_pid(pid_file)
    if pid is not None and pid_alive(pid):
        kill_all([pid], signal.SIGTERM)
        if not wait_for(lambda: not pid_alive(pid), KILL_TIMEOUT):
            kill_all([pid])
    pid_file.unlink(missing_ok=True)

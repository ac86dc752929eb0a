"""The lab's login node: a bastion, compute nodes it alone can reach, non-root accounts.

    lab.bastion_up()        # idempotent; lab.down() removes all of it

What it adds to a running lab (everything named after the lab's NET, so two labs never
share or clash):

* private addresses: every node's sshd also listens on `127.<X+128>.<Y>.<i>` (NET is
  127.X.Y); an iptables OUTPUT rule rejects connections to those addresses unless the
  connecting process runs with the lab's group. Only sessions of the lab's users on the
  bastion (whose sshd opens forwarded connections as the logged-in user) pass, so the
  control node (root) reaches compute nodes through the bastion or not at all.
* the bastion: a plain sshd on `127.<X+128>.<Y>.254`, outside the rule.
* two accounts on every node (users are machine-global; nodes share /etc/passwd):
  `xpflab<X>-<Y>-ops` with password-protected sudo (/etc/sudoers.d), and
  `xpflab<X>-<Y>-usr` without sudo, both in group `xpflab<X>-<Y>`. Each node gets its
  own home for them (a bind mount inside the node), so home-directory installs do not
  collide. The sudo password is in `<lab_dir>/become_password` (0600).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError
from .profile import LabError

if TYPE_CHECKING:
    from .cluster import Lab

BASTION_INDEX = 254
#: owner group of the simulated /dev/dri/renderD* (root:video 0660, as before `render`
#: existed); the ops account is in it, the usr account is not
DRI_GROUP = "video"
SUDOERS_DIR = Path("/etc/sudoers.d")
CLEAN_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}


@dataclass(frozen=True)
class Accounts:
    group: str
    ops: str  # sudo with a password
    usr: str  # no sudo at all

    @property
    def users(self) -> tuple[str, str]:
        return (self.ops, self.usr)


def _octets(net: str) -> tuple[int, int]:
    parts = net.split(".")
    return int(parts[1]), int(parts[2])


def private_net(net: str) -> str:
    """Where compute nodes are reachable only through the bastion (derived from NET)."""
    x, y = _octets(net)
    if x >= 128:
        raise InputError(
            f"the bastion lab needs a NET of 127.X.Y with X < 128, got {net}", key="net"
        )
    return f"127.{x + 128}.{y}"


def accounts(net: str) -> Accounts:
    x, y = _octets(net)
    group = f"xpflab{x}-{y}"
    return Accounts(group, f"{group}-ops", f"{group}-usr")


def _run(*argv: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        list(argv), input=stdin, capture_output=True, text=True, env=CLEAN_ENV, cwd="/"
    )
    if check and proc.returncode != 0:
        raise LabError(f"{argv[0]} {argv[1] if len(argv) > 1 else ''} failed: {proc.stderr}")
    return proc


def _exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
        return True
    except KeyError:
        return False


def password_file(lab: Lab) -> Path:
    return lab.dir / "become_password"


def become_password(lab: Lab) -> str:
    """The lab's sudo password for the ops account (made once, kept in the lab dir)."""
    path = password_file(lab)
    if not path.exists():
        path.write_text(secrets.token_urlsafe(18) + "\n")
        path.chmod(0o600)
    return path.read_text().strip()


def _ensure_accounts(lab: Lab, acc: Accounts) -> None:
    if _run("getent", "group", acc.group, check=False).returncode != 0:
        _run("groupadd", acc.group)
    for user in acc.users:
        if not _exists(user):
            _run("useradd", "-M", "-g", acc.group, "-d", f"/home/{user}", "-s", "/bin/bash", user)
    # ops may open the GPUs (the group owning the lab's /dev/dri/renderD*); usr may not
    _run("usermod", "-a", "-G", DRI_GROUP, acc.ops)
    _run("chpasswd", stdin=f"{acc.ops}:{become_password(lab)}\n")
    _run("usermod", "-p", "*", acc.usr)  # no password, but not locked (sshd refuses locked)
    sudoers = SUDOERS_DIR / acc.group
    text = (
        f"# xpufleet lab {lab.dir}: written by lab.bastion_up, removed by lab.down\n"
        f"{acc.ops} ALL=(ALL:ALL) ALL\n"
    )
    if not sudoers.exists() or sudoers.read_text() != text:
        tmp = sudoers.with_name(f".{acc.group}.tmp")
        tmp.write_text(text)
        tmp.chmod(0o440)
        os.replace(tmp, sudoers)


def _home(path: Path, user: str, public_key: str) -> None:
    """A home with the lab key authorized, owned by `user`."""
    info = pwd.getpwnam(user)
    ssh = path / ".ssh"
    ssh.mkdir(parents=True, exist_ok=True)
    (ssh / "authorized_keys").write_text(public_key + "\n")
    for p in (path, ssh, ssh / "authorized_keys"):
        os.chown(p, info.pw_uid, info.pw_gid)
    path.chmod(0o750)
    ssh.chmod(0o700)
    (ssh / "authorized_keys").chmod(0o600)


def _same_file(a: str | Path, b: str | Path) -> bool:
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _node_homes(lab: Lab, acc: Accounts, public_key: str) -> None:
    """Each running node gets its own home for each account (bind-mounted in the node)."""
    state = lab.read_state()
    for key, entry in state.get("nodes", {}).items():
        holder = entry.get("holder")
        if not holder:
            continue
        for user in acc.users:
            source = lab.node_dir(int(key)) / "fs" / "home" / user
            if not source.exists():
                _home(source, user, public_key)
            if _same_file(f"/proc/{holder}/root/home/{user}", source):
                continue
            _run("nsenter", f"--target={holder}", "--mount", "--",
                 "mount", "--bind", str(source), f"/home/{user}")  # fmt: skip


def _rule(lab: Lab, gid: int) -> list[str]:
    net = private_net(lab.net)
    return [
        "OUTPUT", "-p", "tcp", "-m", "iprange",
        "--dst-range", f"{net}.1-{net}.{BASTION_INDEX - 1}",
        "-m", "tcp", "--dport", str(lab.port),
        "-m", "owner", "!", "--gid-owner", str(gid),
        "-m", "comment", "--comment", f"{lab.tag}:bastion",
        "-j", "REJECT", "--reject-with", "tcp-reset",
    ]  # fmt: skip


def bastion_dir(lab: Lab) -> Path:
    return lab.dir / "bastion"


def bastion_address(lab: Lab) -> str:
    return f"{private_net(lab.net)}.{BASTION_INDEX}"


def running_pid(lab: Lab) -> int | None:
    """The bastion sshd's pid, if it runs with this lab's config."""
    from .processes import pid_alive, read_pid

    pid = read_pid(bastion_dir(lab) / "sshd.pid")
    if not pid or not pid_alive(pid):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return pid if str(bastion_dir(lab) / "sshd_config").encode() in cmdline else None


def _start_bastion(lab: Lab, acc: Accounts) -> None:
    from .processes import START_TIMEOUT, port_open, read_pid, wait_for
    from .sim import generate
    from .sshd import SSHD, write_keypair  # sshd.py imports this module

    where = bastion_dir(lab)
    where.mkdir(parents=True, exist_ok=True)
    key = where / "ssh_host_ed25519_key"
    if not key.exists():
        write_keypair(key, "bastion")
    config = generate.sshd_config(
        address=bastion_address(lab),
        port=lab.port,
        host_key=key,
        authorized_keys=lab.authorized_keys,
        pid_file=where / "sshd.pid",
        bin_dir=where,
        clock_skew=None,
        users=acc.users,
    )
    (where / "sshd_config").write_text(config)
    if running_pid(lab) is not None:
        return
    (where / "sshd.pid").unlink(missing_ok=True)
    _run(SSHD, "-f", str(where / "sshd_config"), "-E", str(where / "sshd.log"))

    def answering() -> bool:
        return read_pid(where / "sshd.pid") is not None and port_open(
            bastion_address(lab), lab.port
        )

    if not wait_for(answering, START_TIMEOUT):
        raise LabError("the bastion's sshd did not come up")


def up(lab: Lab) -> Accounts:
    """Accounts, homes, bastion and firewall (idempotent); the lab must be up."""
    acc = accounts(lab.net)
    private_net(lab.net)
    if not Path("/usr/bin/sudo").exists():
        raise LabError("sudo is not installed (the Makefile's APT_PACKAGES installs it)")
    public_key = Path(f"{lab.key_file}.pub").read_text().strip()
    _ensure_accounts(lab, acc)
    for user in acc.users:
        _home(Path("/home") / user, user, public_key)  # the bastion's (host) homes
    _node_homes(lab, acc, public_key)
    _start_bastion(lab, acc)
    gid = int(_run("getent", "group", acc.group).stdout.split(":")[2])
    rule = _rule(lab, gid)
    if _run("iptables", "-w", "10", "-C", *rule, check=False).returncode != 0:
        _run("iptables", "-w", "10", "-A", *rule)
    from .sshd import write_known_hosts

    write_known_hosts(lab, len(lab.read_state().get("nodes", {})))
    (lab.dir / "inventory-bastion.yaml").write_text(
        f"# The lab's nodes through its bastion as {acc.ops} (sudo with the password in\n"
        f"# {password_file(lab)}). Written by lab.up --bastion / Lab.bastion_up.\n"
        + inventory(lab, user=acc.ops, become=True)
    )
    return acc


def down(lab: Lab, *, accounts: bool = True) -> None:
    """Stop the bastion; with `accounts`, remove the net's accounts, homes and sudoers file
    (not while another lab on the net runs: they are named after the net, so shared)."""
    pid = running_pid(lab)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    (bastion_dir(lab) / "sshd.pid").unlink(missing_ok=True)
    (lab.dir / "inventory-bastion.yaml").unlink(missing_ok=True)
    if accounts:
        remove_accounts(lab)


def remove_accounts(lab: Lab) -> list[str]:
    """Remove the accounts of the lab's net, their sessions, homes, group and sudoers file;
    returns the names of those that existed."""
    try:
        acc = accounts(lab.net)
    except (IndexError, ValueError):
        return []
    uids = set()
    for user in acc.users:
        with contextlib.suppress(KeyError):
            uids.add(pwd.getpwnam(user).pw_uid)
    if uids:  # sessions left on the bastion by these lab-only accounts, by pid
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if os.stat(entry.path).st_uid in uids:
                        os.kill(int(entry.name), signal.SIGKILL)
    removed = []
    sudoers = SUDOERS_DIR / acc.group
    if sudoers.exists():
        sudoers.unlink(missing_ok=True)
        removed.append(str(sudoers))
    for user in acc.users:
        if _exists(user):
            _run("userdel", "-r", user, check=False)
            removed.append(user)
        if os.path.lexists(f"/home/{user}"):
            _run("rm", "-rf", "--one-file-system", f"/home/{user}", check=False)
    if _run("getent", "group", acc.group, check=False).returncode == 0:
        _run("groupdel", acc.group, check=False)
        removed.append(f"group {acc.group}")
    return removed


def inventory(
    lab: Lab,
    *,
    user: str,
    jump: str | None = None,
    become: bool = False,
    extra: dict[str, object] | None = None,
) -> str:
    """The lab inventory rewritten for the bastion: private addresses, ProxyJump, `user`.

    `jump` defaults to the no-sudo account on the bastion."""
    import yaml

    doc = yaml.safe_load(lab.inventory_path.read_text())
    acc = accounts(lab.net)
    net = private_net(lab.net)
    top = doc["all"]["vars"]
    jump = jump or f"{acc.usr}@{bastion_address(lab)}:{lab.port}"
    top["ansible_user"] = user
    top["ansible_ssh_common_args"] = (
        f"-F none -o ProxyJump={jump} -o UserKnownHostsFile={lab.known_hosts} "
        "-o StrictHostKeyChecking=yes"
    )
    top.pop("known_hosts", None)
    if become:
        top["ansible_become"] = True
    top.update(extra or {})
    for entry in doc["all"]["children"]["gpu_nodes"]["hosts"].values():
        index = entry["ansible_host"].rsplit(".", 1)[1]
        entry["ansible_host"] = f"{net}.{index}"
        entry["sglang_host"] = f"{net}.{index}"
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=None)

"""Accounts that are not root, through the lab's bastion: become with a password that
appears nowhere, and a login without sudo that installs under its home.

Real sudo (password-protected, /etc/sudoers.d of the lab's ops account), real sshd
jump host, real provision/launch/stop. A sampler reads the argv and environment of
every process on the machine (the lab's nodes share its pid namespace) while the tasks
run, so a password passed on a command line would be caught.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from xpufleet.lab import Lab, bastion
from xpufleet.lab.wheelhouse import LAB_PIP_PACKAGES, standin_wheelhouse

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]


class Sampler:
    """Reads /proc/*/cmdline and /proc/*/environ over and over, looking for `needle`.

    The control node's own input (`XPUFLEET_BECOME_PASSWORD=...` in the environment of
    the invoke process that the test starts) is the one place it may be."""

    def __init__(self, needle: str) -> None:
        self.needle = needle.encode()
        self.given = b"XPUFLEET_BECOME_PASSWORD=" + self.needle
        self.hits: list[str] = []
        self.passes = 0
        self.sudo_seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit():
                    continue
                for part in ("cmdline", "environ"):
                    try:
                        with open(f"/proc/{entry.name}/{part}", "rb") as fh:
                            data = fh.read()
                    except OSError:
                        continue
                    if part == "environ":
                        data = b"\0".join(e for e in data.split(b"\0") if e != self.given)
                    if self.needle in data:
                        self.hits.append(f"{entry.name}/{part}: {data[:200]!r}")
                    if part == "cmdline" and data.startswith(b"sudo\0-k\0-S"):
                        self.sudo_seen.add(entry.name)
            self.passes += 1
            self._stop.wait(0.005)  # leave the 2-core box some room

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


#: root-owned paths (so provision needs sudo) of this module's own, apart from the
#: defaults the other lab tests expect untouched; removed after the module
ROOT_PATHS = {
    "install_dir": "/opt/xpufleet/become-test",
    "venv": "/opt/xpufleet/become-test/venv",
    "state_dir": "/var/lib/xpufleet/become-test",
    "build_dir": "/var/tmp/xpufleet-become-test",
}


@pytest.fixture(scope="module")
def login(lab: Lab) -> Iterator[bastion.Accounts]:
    yield lab.bastion_up()
    for sub in ("opt_xpufleet", "var_lib_xpufleet"):  # the node's own dirs (see cluster.py)
        for index in range(1, 5):
            shutil.rmtree(lab.node_dir(index) / "fs" / sub / "become-test", ignore_errors=True)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lab's files/wheels: the stand-in and its lock (nodes are offline)."""
    directory = tmp_path_factory.mktemp("become-wheels")
    standin_wheelhouse(directory)
    return directory


def _inventory(lab: Lab, path: Path, user: str, **extra: Any) -> Path:
    # the lab's inventory carries this lab's own launch ports (Lab.launch_ports)
    extra = {"pip_packages": list(LAB_PIP_PACKAGES), **extra}
    path.write_text(bastion.inventory(lab, user=user, extra=extra))
    return path


def _run(
    wheels: Path, inventory: Path, *args: str, password: str | None = None
) -> tuple[int, dict[str, Any], str]:
    env = {k: v for k, v in os.environ.items() if k != "XPUFLEET_BECOME_PASSWORD"}
    env["INVOKE_XPUFLEET_WHEELS_DIR"] = str(wheels)
    if password is not None:
        env["XPUFLEET_BECOME_PASSWORD"] = password
    proc = subprocess.run(
        [
            str(Path(os.sys.executable).parent / "invoke"),
            *args,
            "--hosts",
            str(inventory),
            "--json",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )
    doc = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else {}
    return proc.returncode, doc, proc.stdout + proc.stderr


def _results(doc: dict[str, Any]) -> dict[str, str]:
    return {
        f"{host}:{r['id']}": r["status"]
        for host, report in doc.get("hosts", {}).items()
        for r in report.get("results", [])
    }


def _rank_uids(doc: dict[str, Any]) -> set[int]:
    uids = set()
    for report in doc["hosts"].values():
        for result in report["results"]:
            if result["id"].startswith("status.rank.") and result.get("data", {}).get("pid"):
                uids.add(os.stat(f"/proc/{result['data']['pid']}").st_uid)
    return uids


@pytest.fixture
def stopped(wheels: Path) -> Iterator[list[Path]]:
    """Inventories whose launches are stopped after the test, even when it fails."""
    launched: list[Path] = []
    yield launched
    for inventory in launched:
        _run(wheels, inventory, "stop", "--limit", "node1")


def test_become_through_the_bastion_with_a_password_that_appears_nowhere(
    lab: Lab, login: bastion.Accounts, wheels: Path, tmp_path: Path, stopped: list[Path]
) -> None:
    import pwd

    password = bastion.become_password(lab)
    inventory = _inventory(lab, tmp_path / "ops.yaml", login.ops, ansible_become=True, **ROOT_PATHS)
    outputs: list[str] = []
    with Sampler(password) as sampler:
        code, doc, out = _run(wheels, inventory, "provision", "--limit", "node1",
                              password=password)  # fmt: skip
        outputs.append(out)
        assert code == 0, out
        assert doc["hosts"]["node1"]["results"], out
        code, doc, out = _run(wheels, inventory, "doctor", "--limit", "node1")
        outputs.append(out)
        results = _results(doc)
        assert results["node1:access.gpu"] == "pass"  # ops is in the render nodes' group
        assert results["node1:access.paths"] == "pass"
        stopped.append(inventory)
        code, doc, out = _run(wheels, inventory, "launch", "--tp", "2", "--limit", "node1")
        outputs.append(out)
        assert code == 0, out
        code, doc, out = _run(wheels, inventory, "status", "--limit", "node1")
        outputs.append(out)
        assert _rank_uids(doc) == {pwd.getpwnam(login.ops).pw_uid}  # ranks run as the login
        code, doc, out = _run(wheels, inventory, "stop", "--limit", "node1")
        outputs.append(out)
        assert code == 0, out
    assert sampler.passes > 0 and sampler.sudo_seen, "the sampler never saw sudo running"
    assert sampler.hits == []
    assert not any(password in text for text in outputs)
    for index in (1,):  # nor in any file the run left on the nodes (logs, env files, runs)
        grep = subprocess.run(
            ["grep", "-rlF", password, str(lab.node_dir(index) / "fs")],
            capture_output=True,
            text=True,
        )
        assert grep.stdout == "", grep.stdout


def test_missing_or_wrong_password_is_named(
    lab: Lab, login: bastion.Accounts, wheels: Path, tmp_path: Path
) -> None:
    inventory = _inventory(lab, tmp_path / "ops.yaml", login.ops, ansible_become=True, **ROOT_PATHS)
    code, doc, out = _run(wheels, inventory, "provision", "--limit", "node3")
    assert code == 1, out
    failure = doc["hosts"]["node3"]["results"][0]
    assert "sudo needs a password" in failure["message"]
    assert failure["runbook"].endswith("#sudo-needs-a-password")
    wrong = "not-the-password-4242"
    code, doc, out = _run(wheels, inventory, "provision", "--limit", "node3", password=wrong)
    assert code == 1, out
    assert "sudo refused" in doc["hosts"]["node3"]["results"][0]["message"]
    assert wrong not in out


def test_a_login_without_sudo_installs_under_its_home(
    lab: Lab, login: bastion.Accounts, wheels: Path, tmp_path: Path, stopped: list[Path]
) -> None:
    import pwd

    home = f"/home/{login.usr}/xpufleet"
    paths = {
        "install_dir": home,
        "state_dir": f"{home}/state",
        "venv": f"{home}/venv",
        "build_dir": f"{home}/build",
    }
    inventory = _inventory(lab, tmp_path / "usr.yaml", login.usr, **paths)
    code, doc, out = _run(wheels, inventory, "doctor", "--limit", "node1")
    results = _results(doc)
    assert results["node1:access.paths"] == "pass", out
    assert results["node1:access.gpu"] == "fail"  # usr is not in the render nodes' group
    gpu = next(r for r in doc["hosts"]["node1"]["results"] if r["id"] == "access.gpu")
    assert "permission denied on /dev/dri/renderD128" in gpu["message"]
    code, doc, out = _run(wheels, inventory, "provision", "--limit", "node1")
    assert code == 0, out
    stopped.append(inventory)
    code, doc, out = _run(wheels, inventory, "launch", "--tp", "2", "--limit", "node1")
    assert code == 0, out
    code, doc, out = _run(wheels, inventory, "status", "--limit", "node1")
    assert _rank_uids(doc) == {pwd.getpwnam(login.usr).pw_uid}
    code, doc, out = _run(wheels, inventory, "stop", "--limit", "node1")
    assert code == 0, out
    venv = lab.node_dir(1) / "fs" / "home" / login.usr / "xpufleet" / "venv"
    assert venv.is_dir() and venv.stat().st_uid == pwd.getpwnam(login.usr).pw_uid
    # the default root-owned paths were not touched by this account
    assert yaml.safe_load(inventory.read_text())["all"]["vars"]["venv"] == paths["venv"]

"""`pip install .` (not editable) into a clean venv gives a working `xpufleet` command used
outside the checkout (roles and templates as package data); `invoke` in the checkout
keeps working. No lab needed: the tasks are stopped by bad input before any SSH.

The venv is clean: created empty, it borrows nothing from the test venv, and real pip
installed the package into it resolving every dependency pyproject.toml declares from
this machine's configured indexes (`pip config list`: PyPI plus local folders under
/opt). That takes minutes on a loaded 2-core box, so the venv is made ONCE PER MACHINE
under /var/cache/xpufleet-lab, keyed by pyproject's dependency lists and the
interpreter (like the lab's other environments); a run reinstalls only this checkout's
package into it (no index, no dependency touched) and `pip check`s it. A dependency
added to pyproject.toml makes a new key, hence a new venv resolved from scratch."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path

import tomllib

from xpufleet.lab.pybase import _locked

ROOT = Path(__file__).resolve().parents[1]
INVENTORY = "all:\n  hosts:\n    node1: {ansible_host: 10.0.0.1}\n"
ENV_ROOT = Path(os.environ.get("XPUFLEET_PKG_ENV") or "/var/cache/xpufleet-lab/pkg-env")
MARKER = ".xpufleet-pkg-complete"
PROBE = """import importlib.metadata as m, json, sys
import xpufleet.provision
from xpufleet.provision.roles import ROLES_DIR
print(json.dumps({"path": sys.path, "provision": xpufleet.provision.__file__,
    "roles": str(ROLES_DIR), "dists": [d.metadata["Name"].lower() for d in m.distributions()]}))
"""


def run(argv: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("VIRTUAL_ENV")}
    return subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, check=False, env={**environ, **env}
    )


def must(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"{' '.join(proc.args)}: {proc.stderr[-2000:]}"
    return proc


@contextlib.contextmanager
def package_env() -> Iterator[Path]:
    """The clean venv with this checkout's package installed, held (locked) for one test."""
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text())
    build, deps = doc["build-system"]["requires"], doc["project"]["dependencies"]
    key_doc = [build, deps, list(sys.version_info[:2]), platform.machine()]
    key = hashlib.sha256(json.dumps(key_doc).encode()).hexdigest()[:16]
    env_dir = ENV_ROOT / key
    pip = [str(env_dir / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    with _locked(ENV_ROOT / f".{key}.lock"):
        if not (env_dir / MARKER).is_file():
            shutil.rmtree(env_dir, ignore_errors=True)
            venv.create(env_dir, with_pip=True, symlinks=True)
            must(run([*pip, "install", "--quiet", *build], ENV_ROOT))
            # the one resolution: every declared dependency, from the configured indexes
            must(run([*pip, "install", "--quiet", "--no-build-isolation", str(ROOT)], ENV_ROOT))
            (env_dir / MARKER).write_text(json.dumps(key_doc) + "\n")
        else:  # this checkout's package, dependencies as resolved above
            again = ["--no-deps", "--no-index", "--no-build-isolation", "--force-reinstall"]
            must(run([*pip, "install", "--quiet", *again, str(ROOT)], ENV_ROOT))
        yield env_dir


def test_pip_install_gives_an_xpufleet_command_outside_the_checkout(tmp_path: Path) -> None:
    with package_env() as env_dir:
        check_installed_command(env_dir, tmp_path)
    # and `invoke` in the checkout still runs the same collection
    in_checkout = run([sys.executable, "-m", "invoke", "--list"], ROOT)
    assert in_checkout.returncode == 0 and "provision" in in_checkout.stdout


def check_installed_command(env_dir: Path, tmp_path: Path) -> None:
    python = env_dir / "bin" / "python"
    pip = [str(python), "-m", "pip", "--disable-pip-version-check"]
    checked = run([*pip, "check"], tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # one interpreter of the env answers: its import path, distributions, package data
    probe = run([str(python), "-c", PROBE], tmp_path)
    assert probe.returncode == 0, probe.stderr
    seen = json.loads(probe.stdout)
    # nothing borrowed: the env's import path is its own site-packages and the stdlib
    assert any(p.startswith(str(env_dir)) for p in seen["path"])
    assert not [p for p in seen["path"] if p.startswith(sys.prefix)], seen["path"]
    installed = set(seen["dists"])
    assert {"xpufleet", "fabric", "invoke", "paramiko", "packaging", "openai"} <= installed
    assert not installed & {"pytest", "torch", "ruff"}  # the test extra stays out
    # the installed copy, not the checkout, is what runs; roles and templates came along
    assert seen["provision"].startswith(str(env_dir)) and str(ROOT) not in seen["provision"]
    roles = Path(seen["roles"])
    assert roles.is_relative_to(env_dir)
    assert (roles / "wheels" / "steps.py").is_file()
    assert (roles / "build" / "templates" / "triton.sh.j2").is_file()
    where = tmp_path / "operator"
    where.mkdir()
    (where / "hosts.yaml").write_text(INVENTORY)
    xpufleet = str(env_dir / "bin" / "xpufleet")

    helped = run([xpufleet, "--help"], where)
    assert helped.returncode == 0 and "--list" in helped.stdout, helped.stderr
    bad_flag = run([xpufleet, "--no-such-flag"], where)
    assert bad_flag.returncode == 2, bad_flag.stdout + bad_flag.stderr
    assert "no-such-flag" in bad_flag.stderr
    listed = run([xpufleet, "--list"], where)
    assert listed.returncode == 0, listed.stderr
    for task in ("doctor", "provision", "build", "launch", "lab.up"):
        assert task in listed.stdout

    # provision plans every role (package data: steps.py, defaults, templates) before SSH;
    # an unknown tag is then refused with exit 2, nothing run on any host
    planned = run([xpufleet, "provision", "--hosts", "hosts.yaml", "--tags", "nope"], where)
    assert planned.returncode == 2, planned.stdout + planned.stderr
    assert "unknown tag(s) nope" in planned.stdout + planned.stderr
    known = planned.stdout + planned.stderr
    assert "wheels" in known and "sglang" in known  # the tags the roles offer

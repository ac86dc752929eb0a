"""`pip install .` (not editable) into a clean venv gives a working `xpufleet` command used
outside the checkout (roles and templates as package data); `invoke` in the checkout
keeps working. No lab needed: the tasks are stopped by bad input before any SSH.

The package is built and installed for real (pip, build isolation, non-editable); its
dependencies are NOT downloaded again (minutes on a loaded 2-core box): the clean venv
sees the test venv's site-packages through a .pth line, after its own (the editable
xpufleet there is not active: .pth files of an added directory are not processed), and
the declared dependencies are checked against the installed metadata instead."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INVENTORY = "all:\n  hosts:\n    node1: {ansible_host: 10.0.0.1}\n"


def run(argv: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("VIRTUAL_ENV")}
    return subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, check=False, env={**environ, **env}
    )


def test_pip_install_gives_an_xpufleet_command_outside_the_checkout(tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)  # the test venv's pip installs into it (--python)
    python = env_dir / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "--disable-pip-version-check"]
    installed = run([*pip, "install", "--quiet", "--no-deps", str(ROOT)], tmp_path)
    assert installed.returncode == 0, installed.stderr[-2000:]
    site = run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], ROOT)
    ours = run(
        [sys.executable, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], ROOT
    )
    Path(site.stdout.strip(), "zz-test-deps.pth").write_text(ours.stdout.strip() + "\n")
    requires = run(
        [str(python), "-c", "import importlib.metadata as m; print(m.requires('xpufleet'))"], ROOT
    ).stdout
    for dependency in ("packaging", "invoke", "fabric", "jinja2", "pyyaml"):
        assert dependency in requires.lower(), requires
    where = tmp_path / "operator"
    where.mkdir()
    (where / "hosts.yaml").write_text(INVENTORY)
    xpufleet = str(env_dir / "bin" / "xpufleet")

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

    # the installed copy, not the checkout, is what runs
    origin = run(
        [str(python), "-c", "import xpufleet.provision as p; print(p.__file__)"], where
    ).stdout
    assert str(env_dir) in origin and str(ROOT) not in origin
    roles = run(
        [str(python), "-c", "from xpufleet.provision.roles import ROLES_DIR as r; print(r)"], where
    ).stdout.strip()
    assert Path(roles, "wheels", "steps.py").is_file()
    assert Path(roles, "build", "templates", "triton.sh.j2").is_file()
    assert Path(roles).is_relative_to(env_dir)

    # and `invoke` in the checkout still runs the same collection
    in_checkout = run([sys.executable, "-m", "invoke", "--list"], ROOT)
    assert in_checkout.returncode == 0 and "provision" in in_checkout.stdout

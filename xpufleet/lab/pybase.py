"""The lab's base Python environment: real CPU torch, created once per machine.

Every lab (and every node of every lab) shares one venv, by default at
/var/cache/xpufleet-lab/pybase (override: XPUFLEET_LAB_PYBASE), so torch is installed
once. The lab inventory points `python` and `base_site_packages` at it, and provision's
per-node environment inherits torch from it.

The lab's torch simulation is registered here as an entry point of group
`torch.backends`, which torch itself loads at the end of `import torch` (its plugin
mechanism for out-of-tree devices). It works whether the site-packages directory is
the environment's own or inherited through a path in another environment, and it does
nothing on a machine without /opt/intel/.lab/torch.json.
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..config import LabSettings
from .paths import Under
from .profile import LabError
from .sim.generate import SIM_MODULE, SIM_MODULE_NAME, Tree, lab_distribution, write_tree

DEFAULT_ROOT = Path(LabSettings.pybase)
SYSTEM_PYTHON = "/usr/bin/python3"
#: what the base environment holds (numpy too: torch warns on every import without it;
#: setproctitle: the fork's scheduler titles its processes with it, so does the stand-in)
REQUIREMENTS = ("torch==2.13.0", "numpy", "setproctitle")
MARKER = ".xpufleet-lab-complete"
SIM_DIST = "xpufleet_lab_sim-1.0.dist-info"


@dataclass(frozen=True)
class BaseEnv:
    """Paths of the shared base environment."""

    root: Path

    python = Under("root", "bin", "python3")
    #: a version-independent path (a symlink to lib/pythonX.Y/site-packages)
    site_packages = Under("root", "site-packages")


def base_root() -> Path:
    return Path(LabSettings.from_env().pybase)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _run(argv: list[str], log: Path) -> None:
    with log.open("a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise LabError(
            f"creating the lab's base Python environment failed: {' '.join(argv)} exited "
            f"{proc.returncode}: {' | '.join(tail)} (log: {log})"
        )


def sim_tree() -> Tree:
    """The simulation module and its `torch.backends` entry point (site-packages relative)."""
    return lab_distribution(
        SIM_MODULE_NAME,
        SIM_MODULE.read_text(),
        SIM_DIST,
        "xpufleet-lab-sim",
        "xpufleet lab only: simulated torch.xpu answers on lab nodes",
        f"[torch.backends]\nxpufleet_lab = {SIM_MODULE_NAME}:patch_torch",
    )


def ensure_base_env(root: Path | None = None) -> BaseEnv:
    """Create the base environment if it is not complete; refresh the simulation module.

    The first call on a machine takes a minute or two (pip installs torch from the
    machine's configured wheel sources); later calls only compare a few small files.
    """
    env = BaseEnv(root or base_root())
    with _locked(env.root.parent / f".{env.root.name}.lock"):
        marker = env.root / MARKER
        if not marker.exists():
            _create(env)
        elif marker.read_text().split() != list(REQUIREMENTS):
            _install(env)
        write_tree(env.site_packages, sim_tree())
    return env


def _create(env: BaseEnv) -> None:
    if env.root.exists():
        shutil.rmtree(env.root)
    env.root.parent.mkdir(parents=True, exist_ok=True)
    log = env.root.parent / f"{env.root.name}.log"
    log.write_text("")
    _run([SYSTEM_PYTHON, "-m", "venv", str(env.root)], log)
    lib = next((env.root / "lib").glob("python3*/site-packages"))
    env.site_packages.symlink_to(lib.relative_to(env.root))
    _install(env)


def _install(env: BaseEnv) -> None:
    """pip-install the requirements with the machine's own pip configuration."""
    log = env.root.parent / f"{env.root.name}.log"
    _run([str(env.python), "-m", "pip", "install", "--quiet", *REQUIREMENTS], log)
    (env.root / MARKER).write_text("\n".join(REQUIREMENTS) + "\n")

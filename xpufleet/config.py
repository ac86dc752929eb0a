"""One settings tree: invoke.yaml's `xpufleet:` section, overridden by task flags."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .errors import InputError

#: the directory holding the `xpufleet` package (a checkout, or site-packages)
PACKAGE_PARENT = Path(__file__).resolve().parent.parent


def project_root() -> Path:
    """Where relative settings (inventory/, files/wheels, runs/) live: the checkout when
    xpufleet runs from one (`invoke`), else the current directory (`xpufleet` installed
    with `pip install .`, used in an operator's own directory)."""
    if (PACKAGE_PARENT / "tasks.py").is_file() and (PACKAGE_PARENT / "pyproject.toml").is_file():
        return PACKAGE_PARENT
    return Path.cwd()


PROJECT_ROOT = project_root()


@dataclass(frozen=True)
class Settings:
    """Every option a task can take; flags and invoke.yaml map onto these names."""

    hosts: str = "inventory/lab.yaml"
    forks: int = 32
    known_hosts: str = "~/.ssh/known_hosts"
    #: OpenSSH client config applied to hosts ("none": read no ssh_config at all)
    ssh_config: str = "~/.ssh/config"
    key_file: str | None = None
    connect_timeout: float = 10.0
    command_timeout: float = 600.0
    runs_dir: str = "runs"
    wheels_dir: str = "files/wheels"
    lab_dir: str = ".lab"

    @classmethod
    def from_config(cls, section: Any, **flags: Any) -> Settings:
        """Build from invoke's config section (a mapping) plus non-None flags."""
        values: dict[str, Any] = {}
        known = {f.name for f in fields(cls)}
        for name, value in dict(section or {}).items():
            if name not in known:
                raise InputError(f"unknown setting '{name}'", file="invoke.yaml", key=name)
            values[name] = value
        for name, value in flags.items():
            if value is not None:
                values[name] = value
        # Invoke passes `--forks 4` as a string: made an int here, once, for every task
        try:
            values["forks"] = int(values.get("forks", cls.forks))
        except (TypeError, ValueError):
            raise InputError(
                f"--forks must be a whole number, got {values['forks']!r}", key="forks"
            ) from None
        if values["forks"] < 1:
            raise InputError("--forks must be at least 1", key="forks")
        return cls(**values)

    def path(self, value: str) -> Path:
        """A configured path: ~ expanded, relative to the project root."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else PROJECT_ROOT / p


#: the lab's settings an environment variable overrides (tests and parallel developers
#: each run their own lab): LabSettings field -> variable
LAB_ENV = {
    "dir": "XPUFLEET_LAB_DIR",
    "net": "XPUFLEET_LAB_NET",
    "port": "XPUFLEET_LAB_PORT",
    "pybase": "XPUFLEET_LAB_PYBASE",
    "vllm": "XPUFLEET_LAB_VLLM",
    "sglang": "XPUFLEET_LAB_SGLANG",
    "keep": "XPUFLEET_LAB_KEEP",
}


@dataclass(frozen=True)
class LabSettings:
    """Which lab and where its once-per-machine environments live; read in one place.

    Lowest first: these defaults < the `lab_dir` setting (invoke.yaml or a flag) <
    XPUFLEET_LAB_* in the environment (LAB_ENV)."""

    dir: str = ".lab"
    #: address prefix 127.X.Y: node i is 127.X.Y.i
    net: str = "127.0.1"
    port: int = 22022
    #: the lab's base Python env (CPU torch + the torch simulation), once per machine
    pybase: str = "/var/cache/xpufleet-lab/pybase"
    #: the lab's vLLM-on-CPU env
    vllm: str = "/var/cache/xpufleet-lab/vllm"
    #: the real sglang 0.4.3.post2 env (its ServerArgs parser)
    sglang: str = "/var/cache/xpufleet-lab/sglang-0.4.3.post2"
    #: tests leave the session lab running ("1")
    keep: bool = False

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, lab_dir: str | None = None
    ) -> LabSettings:
        """The defaults, `lab_dir` (the setting) over them, the environment over both."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {"dir": lab_dir} if lab_dir else {}
        for name, variable in LAB_ENV.items():
            if env.get(variable):
                values[name] = env[variable]
        port = str(values.get("port", cls.port))
        if not port.isdigit():
            raise InputError(f"not a port: {port!r}", key=LAB_ENV["port"])
        values["port"] = int(port)
        values["keep"] = str(values.get("keep", "")) == "1"
        return cls(**values)

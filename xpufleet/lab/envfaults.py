"""Faults of a provisioned Python environment (the lab's own, applied over SSH).

- `missing_dependency`: a runtime dependency of the engine is uninstalled from the
  venv (someone ran `pip uninstall`, or a provision that skipped the lock);
- `foreign_torch`: a torch that is not the built XPU one sits in the venv, shadowing
  it, as when `pip install` of some package pulled a CUDA torch from PyPI. SIMULATED
  with a small locally built fake `torch` wheel (version 2.9.1+cu128, CUDA-like
  `torch.version`, no XPU build) instead of downloading an 800 MB CUDA wheel.

Provision repairs both (it installs exactly the lock and removes what is not in it);
doctor names both first (python.imports, torch.xpu).
"""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile

from .. import shell
from ..transport import Session

FOREIGN_TORCH_VERSION = "2.9.1+cu128"

_FAKE_TORCH = {
    "torch/__init__.py": (
        '"""NOT torch: the xpufleet lab\'s stand-in for a CUDA torch from PyPI."""\n'
        "from . import version, xpu, distributed  # noqa\n"
        "__version__ = version.__version__\n"
        "def cuda_is_available():\n    return False\n"
    ),
    "torch/version.py": (
        f'__version__ = "{FOREIGN_TORCH_VERSION}"\ncuda = "12.8"\nxpu = None\nhip = None\n'
    ),
    "torch/xpu/__init__.py": (
        "def is_available():\n    return False\ndef device_count():\n    return 0\n"
    ),
    "torch/distributed/__init__.py": (
        "def is_xccl_available():\n    return False\n"
        "def is_backend_available(name):\n    return name in ('gloo', 'nccl')\n"
    ),
}


def foreign_torch_wheel() -> tuple[str, bytes]:
    """(file name, bytes) of the fake CUDA-like torch wheel (pure Python, deterministic)."""
    info = f"torch-{FOREIGN_TORCH_VERSION}.dist-info"
    files = {name: text.encode() for name, text in _FAKE_TORCH.items()}
    files[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: torch\nVersion: {FOREIGN_TORCH_VERSION}\n"
        "Summary: xpufleet lab fake of a CUDA torch wheel\n"
    ).encode()
    files[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: xpufleet-lab\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = ""
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record += f"{name},sha256={digest},{len(data)}\n"
    files[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=(2025, 1, 1, 0, 0, 0)), data)
    return f"torch-{FOREIGN_TORCH_VERSION}-py3-none-any.whl", buf.getvalue()


def break_env(session: Session, python: str, fault: str, param: str = "orjson") -> None:
    """Apply one fault to the environment of `python` on the session's node."""
    pip = [python, "-m", "pip", "--no-input", "--disable-pip-version-check"]
    if fault == "missing_dependency":
        session.run(shell.join([*pip, "uninstall", "-y", param]) + " >/dev/null")
    elif fault == "foreign_torch":
        name, data = foreign_torch_wheel()
        directory = "/tmp/xpufleet-lab-foreign-torch"
        path = f"{directory}/{name}"
        session.run(f"mkdir -p {directory} && cat > {shell.quote(path)}", stdin=data)
        install = [*pip, "install", "--no-index", "--no-deps", path]
        session.run(shell.join(install) + f" >/dev/null && rm -rf {directory}")
    else:
        raise ValueError(f"unknown environment fault {fault!r}")

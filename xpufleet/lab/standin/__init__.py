"""The lab's SGLang stand-in: its source (`pkg/`) and a reproducible wheel builder.

The wheel is written directly with zipfile (no pip, no network, no build isolation):
fixed timestamps and sorted entries make the same source give the same bytes, so
provision's sha256 comparison sees "unchanged" on every rerun. Its version,
`0.4.3.post2+xpufleetlab`, says both what it imitates and that it is the lab's.
"""

from __future__ import annotations

import base64
import hashlib
import re
import zipfile
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parent / "pkg"
PACKAGE_DIR = SOURCE_DIR / "sglang"
NAME = "sglang"
TAG = "py3-none-any"
#: zip timestamps of every entry (reproducible bytes)
FIXED_DATE = (2025, 1, 1, 0, 0, 0)
SUMMARY = "xpufleet lab stand-in for SGLang 0.4.3.post2 (tiny tensor-parallel model on gloo)"
#: Requires-Dist, shaped like the fork's python/pyproject.toml (cboss6/sglang@
#: deepseek-xpu-distribute): `setproctitle` is a base dependency (the scheduler imports
#: it), the server's runtime set is the `runtime_common` extra, and the guide installs
#: `python[all_xpu]` = srt_xpu = runtime_common + outlines. A light, PyPI-available
#: subset of runtime_common, imported at module top where the fork imports it
#: (srt/entrypoints/http_server.py: orjson, uvicorn, uvloop, fastapi; srt/managers/
#: scheduler.py: setproctitle, zmq, psutil): a node that lacks one fails at launch.
#: torch is not declared: the lab's nodes inherit it from the base environment.
#: The fork nests its extras (all_xpu -> srt_xpu -> runtime_common); they are flattened
#: here because pip < 23.3 mis-normalizes self-referencing extras (`sglang[srt_xpu]`
#: becomes `srt-xpu`, which a Metadata-Version 2.1 `Provides-Extra: srt_xpu` lacks).
RUNTIME_COMMON = ("fastapi", "orjson", "psutil", "pyzmq>=25.1.2", "uvicorn", "uvloop")
EXTRAS = ("runtime_common", "srt_xpu", "all_xpu")
REQUIRES = ("setproctitle",) + tuple(
    f'{req}; extra == "{extra}"' for extra in EXTRAS for req in RUNTIME_COMMON
)


def version() -> str:
    """The stand-in's version, read from its own source (one place)."""
    text = (PACKAGE_DIR / "version.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "([^"]+)"', text, re.MULTILINE)
    if not match:
        raise RuntimeError(f"no __version__ in {PACKAGE_DIR / 'version.py'}")
    return match.group(1)


def wheel_name() -> str:
    return f"{NAME}-{version()}-{TAG}.whl"


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return f"sha256={digest.decode()}"


def _sources() -> list[tuple[str, bytes]]:
    files = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        files.append((path.relative_to(SOURCE_DIR).as_posix(), path.read_bytes()))
    return files


def _metadata(ver: str) -> list[tuple[str, bytes]]:
    dist_info = f"{NAME}-{ver}.dist-info"
    metadata = (
        "Metadata-Version: 2.1\n"
        f"Name: {NAME}\n"
        f"Version: {ver}\n"
        f"Summary: {SUMMARY}\n"
        "Requires-Python: >=3.10\n"
        + "".join(f"Requires-Dist: {r}\n" for r in REQUIRES)
        + "".join(f"Provides-Extra: {e}\n" for e in EXTRAS)
    )
    wheel = f"Wheel-Version: 1.0\nGenerator: xpufleet\nRoot-Is-Purelib: true\nTag: {TAG}\n"
    return [
        (f"{dist_info}/METADATA", metadata.encode()),
        (f"{dist_info}/WHEEL", wheel.encode()),
        (f"{dist_info}/top_level.txt", f"{NAME}\n".encode()),
    ]


def build_wheel(dest: str | Path) -> Path:
    """Write the stand-in's wheel into `dest` (created if needed) and return its path."""
    ver = version()
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    entries = _sources() + _metadata(ver)
    record_name = f"{NAME}-{ver}.dist-info/RECORD"
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in entries)
    record += f"{record_name},,\n"
    entries.append((record_name, record.encode()))
    target = dest / wheel_name()
    partial = target.with_suffix(".whl.part")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as wheel:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=FIXED_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            wheel.writestr(info, data)
    partial.replace(target)
    return target

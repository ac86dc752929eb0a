"""The lab's closed environment: the stand-in wheel plus its lock, resolved once per machine.

Resolving and downloading the lock is real pip (xpufleet.provision.wheelhouse) and
takes a minute the first time (PyPI); the result is cached next to the base
environment (/var/cache/xpufleet-lab/wheelhouse/<key>/), keyed by everything the
resolution reads: the built wheels' names, versions, extras and metadata, the pins, the
constraints and the base environment. Later calls copy ~10 MB of wheels.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from collections.abc import Sequence
from pathlib import Path

from ..provision.manifest import Manifest, entry_for_file, load_manifest
from ..provision.wheelhouse import lock_wheelhouse
from . import pybase
from .standin import SOURCE_DIR, build_wheel

#: the lab's pins (REFERENCE §1's exact pins are not all installable on CPU here)
LAB_PIP_PACKAGES = ("py-cpuinfo==9.0.0", "msgspec")
#: the guide installs SGLang as `python[all_xpu]`
STANDIN_EXTRAS = ("all_xpu",)


def _metadata(path: Path) -> str:
    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return archive.read(name).decode()


def cache_key(manifest: Manifest, pip_packages: Sequence[str], env: pybase.BaseEnv) -> str:
    marker = env.root / pybase.MARKER
    doc = {
        "wheels": [
            [w.key, w.version, list(w.extras), list(w.requires), _metadata(manifest.wheel_path(w))]
            for w in manifest.ordered()
        ],
        "pins": list(pip_packages),
        "base": marker.read_text() if marker.exists() else "",
        "python": str(env.python),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def lock_cached(
    manifest: Manifest, pip_packages: Sequence[str], env: pybase.BaseEnv | None = None
) -> Manifest:
    """`lock_wheelhouse` for the lab's base environment, cached per machine; saved."""
    env = env or pybase.ensure_base_env()
    key = cache_key(manifest, pip_packages, env)
    cache = env.root.parent / "wheelhouse" / key
    with pybase._locked(env.root.parent / ".wheelhouse.lock"):
        if not (cache / "manifest.json").exists():
            work = cache.with_name(key + ".part")
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            staged = Manifest(work / "manifest.json", list(manifest.wheels))
            for entry in manifest.wheels:
                shutil.copy2(manifest.wheel_path(entry), work / entry.filename)
            lock_wheelhouse(
                staged,
                pip_packages,
                python=str(env.python),
                base_site_packages=[str(env.site_packages)],
            )
            shutil.rmtree(cache, ignore_errors=True)
            work.rename(cache)
    cached = load_manifest(cache / "manifest.json")
    for dist in cached.locked:
        target = manifest.directory / dist.filename
        if not target.exists():
            shutil.copy2(cache / dist.filename, target)
    manifest.locked = cached.locked
    manifest.requirements = cached.requirements
    manifest.constraints = cached.constraints
    manifest.save()
    return manifest


def standin_wheelhouse(
    dest: Path, pip_packages: Sequence[str] = LAB_PIP_PACKAGES, *extra_wheels: Path
) -> Manifest:
    """files/wheels for the lab in `dest`: the stand-in (+ `extra_wheels`) and its lock."""
    dest.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(dest / "manifest.json")
    manifest.upsert(
        entry_for_file(
            build_wheel(dest),
            source=str(SOURCE_DIR.relative_to(SOURCE_DIR.parents[3])),
            import_name="sglang",
            extras=STANDIN_EXTRAS,
        )
    )
    for path in extra_wheels:
        manifest.upsert(entry_for_file(path))
    return lock_cached(manifest, pip_packages)

"""The closed environment: resolve, download and lock everything the built wheels need.

`invoke build` (after the recipes) and the lab call `lock_wheelhouse`. Resolution is
REAL pip, on the control node (it reads PyPI and its local package folders; the nodes
may have no network at all):

1. a scratch environment like the nodes' (created with the inventory's `python` when
   the control node has that interpreter, inheriting `base_site_packages` that exist
   here; else the control node's python3),
2. `pip install --dry-run --report` of the built wheels (with
   their extras, e.g. `sglang[all_xpu]`), each built wheel's extra requirement files
   (vLLM's requirements-xpu.txt), and `pip_packages`, constrained to `name==version`
   of every built wheel (and `lock_constraints`): pip can never pick a CUDA torch or
   any other build of a wheel we built, it fails instead;
3. `pip wheel --no-deps` of exactly the resolved `name==version` set into
   files/wheels/ (wheels are downloaded; an sdist-only package is built here once),
4. the lock in the manifest: every distribution with version, file, size, sha256, and
   the top-level modules it provides (doctor names the distribution of a missing
   module with them).

What the scratch environment already has (a shared base torch in the lab) stays out of
the lock: nodes inherit it the same way.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, LockFailed
from .manifest import LockedDist, Manifest, normalize, parse_wheel_filename, sha256_file

#: never part of a lock and never removed from an environment (the tool that installs it;
#: setuptools is not here: a venv's own old copy would shadow what the lock or base holds)
BOOTSTRAP = frozenset({"pip"})
RUNBOOK = "docs/runbooks/provision.md#lock-failed"


@dataclass(frozen=True)
class LockInputs:
    """What to resolve: built wheel files (with extras), extra requirements, constraints."""

    wheels: tuple[str, ...]  # "path/to/x.whl[extra1,extra2]"
    requirements: tuple[str, ...]
    constraints: tuple[str, ...]


def _req_name(line: str) -> str | None:
    """The distribution a requirement line names (None for options, comments, paths)."""
    text = line.split("#", 1)[0].strip()
    if not text or text.startswith("-") or "/" in text.split(";")[0]:
        return None
    match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)", text)
    return normalize(match.group(1)) if match else None


def lock_inputs(
    manifest: Manifest, pip_packages: Sequence[str], extra_constraints: Sequence[str] = ()
) -> LockInputs:
    """The resolution request for a manifest's built wheels (pure).

    A built wheel's extra requirement (e.g. vLLM's `torch==2.5.1+cxx11.abi`) that names
    another built wheel is dropped: the built one is the environment's, by definition."""
    built = {w.key for w in manifest.wheels}
    wheels = []
    requirements: list[str] = []
    for entry in manifest.ordered():
        path = manifest.wheel_path(entry)
        named = [_provided_extra(path, extra) for extra in entry.extras]
        extras = f"[{','.join(named)}]" if named else ""
        wheels.append(f"{path}{extras}")
        for line in entry.requires:
            name = _req_name(line)
            if name is None or name in built:
                continue
            requirements.append(line.split("#", 1)[0].strip())
    requirements += [str(p) for p in pip_packages]
    constraints = [f"{w.key}=={w.version}" for w in manifest.ordered()]
    constraints += [str(c) for c in extra_constraints]
    return LockInputs(tuple(wheels), tuple(dict.fromkeys(requirements)), tuple(constraints))


def _provided_extra(path: Path, extra: str) -> str:
    """`extra` spelled as the wheel's Provides-Extra spells it: setuptools >= 69 writes
    `all-xpu` for the fork's `all_xpu`, and pip < 23.3 matches extras literally."""
    try:
        with zipfile.ZipFile(path) as archive:
            meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
            text = archive.read(meta).decode(errors="replace")
    except (OSError, zipfile.BadZipFile, StopIteration):
        return extra
    for line in text.splitlines():
        if line.startswith("Provides-Extra:"):
            provided = line.split(":", 1)[1].strip()
            if normalize(provided) == normalize(extra):
                return provided
    return extra


def parse_report(text: str, built: Iterable[str]) -> list[tuple[str, str]]:
    """(name, version) of every distribution pip's --report would install, built ones
    and the env's own tooling excluded, sorted by name (pure)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LockFailed(f"pip's resolution report is not JSON: {exc.msg}") from exc
    skip = {normalize(b) for b in built} | BOOTSTRAP
    found: dict[str, str] = {}
    for item in doc.get("install", []):
        meta = item.get("metadata") or {}
        name = normalize(str(meta.get("name", "")))
        if name and name not in skip:
            found[name] = str(meta.get("version", ""))
    return sorted(found.items())


def wheel_modules(path: Path) -> tuple[str, ...]:
    """Top-level import names a wheel provides (top_level.txt, else its RECORD's roots)."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        top = next((n for n in names if n.endswith(".dist-info/top_level.txt")), None)
        if top:
            mods = [m.strip() for m in archive.read(top).decode().splitlines() if m.strip()]
            if mods:
                return tuple(sorted(set(mods)))
    roots = set()
    for name in names:
        first = name.split("/", 1)[0]
        if first.endswith((".dist-info", ".data")) or first.startswith("__"):
            continue
        roots.add(first[:-3] if first.endswith(".py") else first.split(".", 1)[0])
    return tuple(sorted(r for r in roots if r.isidentifier()))


def _run(argv: list[str], what: str) -> str:
    proc = subprocess.run(
        argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
    )
    if proc.returncode != 0:
        tail = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()][-8:]
        raise LockFailed(f"{what} failed (exit {proc.returncode}): " + " | ".join(tail))
    return proc.stdout


def scratch_env(directory: Path, python: str, base_site_packages: Sequence[str]) -> str:
    """An empty environment like the nodes' (same interpreter if it exists here, the
    base site-packages that exist here); returns its interpreter."""
    interpreter = python if python and Path(python).is_file() else sys.executable
    env = directory / "env"
    _run([interpreter, "-m", "venv", "--without-pip", str(env)], "creating the scratch env")
    py = env / "bin" / "python"
    purelib = _run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], "sysconfig"
    ).strip()
    bases = [d for d in base_site_packages if Path(d).is_dir()]
    if bases:
        Path(purelib, "xpufleet-base.pth").write_text("\n".join(bases) + "\n")
    return str(py)


def resolve(inputs: LockInputs, python: str, work: Path) -> list[tuple[str, str]]:
    """Real pip resolution (dry run) of `inputs` for `python`: [(name, version)]."""
    constraints = work / "constraints.txt"
    constraints.write_text("".join(f"{c}\n" for c in inputs.constraints))
    requirements = work / "requirements.txt"
    requirements.write_text("".join(f"{r}\n" for r in inputs.requirements))
    report = work / "report.json"
    argv = [sys.executable, "-m", "pip", "--python", python, "install", "--dry-run"]
    argv += ["--quiet", "--no-input", "--report", str(report), "-c", str(constraints)]
    argv += ["-r", str(requirements), *inputs.wheels]
    _run(argv, "pip resolution of the closed environment")
    built = [parse_wheel_filename(Path(w.split("[", 1)[0]).name)[0] for w in inputs.wheels]
    return parse_report(report.read_text(), built)


def download(pins: list[tuple[str, str]], dest: Path, have: dict[str, LockedDist]) -> None:
    """Bring each `name==version` into `dest` as a wheel (one pip call for the missing)."""
    todo = [
        f"{n}=={v}"
        for n, v in pins
        if not (n in have and have[n].version == v and (dest / have[n].filename).is_file())
    ]
    if not todo:
        return
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
        fh.write("".join(f"{t}\n" for t in todo))
    try:
        _run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-input", "--no-deps",
             "-w", str(dest), "-r", fh.name],
            "downloading the closed environment into " + str(dest),
        )  # fmt: skip
    finally:
        os.unlink(fh.name)


def index_wheelhouse(pins: list[tuple[str, str]], dest: Path) -> list[LockedDist]:
    """Lock entries for the pinned set from the files in `dest` (sha256 of each file)."""
    files: dict[tuple[str, str], Path] = {}
    for path in dest.glob("*.whl"):
        try:
            files[parse_wheel_filename(path.name)] = path
        except InputError:
            continue
    out = []
    for name, version in pins:
        path = files.get((name, version)) or next(
            (p for (n, v), p in files.items() if n == name and _same_version(v, version)), None
        )
        if path is None:
            raise LockFailed(f"pip resolved {name}=={version} but no wheel of it is in {dest}")
        out.append(
            LockedDist(
                name=name,
                version=version,
                filename=path.name,
                sha256=sha256_file(path),
                size=path.stat().st_size,
                modules=wheel_modules(path),
            )
        )
    return out


def _same_version(a: str, b: str) -> bool:
    from packaging.version import InvalidVersion, Version

    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


def lock_wheelhouse(
    manifest: Manifest,
    pip_packages: Sequence[str],
    *,
    python: str = "",
    base_site_packages: Sequence[str] = (),
    extra_constraints: Sequence[str] = (),
) -> Manifest:
    """Resolve, download and record the closed environment of `manifest` (saved)."""
    inputs = lock_inputs(manifest, pip_packages, extra_constraints)
    with tempfile.TemporaryDirectory(prefix="xpufleet-lock-") as tmp:
        work = Path(tmp)
        scratch = scratch_env(work, python, base_site_packages)
        pins = resolve(inputs, scratch, work)
    have = {d.name: d for d in manifest.locked}
    download(pins, manifest.directory, have)
    locked = index_wheelhouse(pins, manifest.directory)
    wanted = {d.filename for d in locked} | {w.filename for w in manifest.wheels}
    for old in manifest.locked:
        if old.filename not in wanted:
            (manifest.directory / old.filename).unlink(missing_ok=True)
    manifest.locked = locked
    manifest.requirements = list(inputs.requirements)
    manifest.constraints = list(inputs.constraints)
    manifest.save()
    return manifest

"""The two wheel manifests, one format each, shared by provision, build and doctor.

1. The control node's `files/wheels/manifest.json` (written by `invoke build`, read by
   `invoke provision`)::

       {"format": 1, "wheels": [
         {"name": "torch", "version": "2.7.0a0+gitc21dc11", "filename": "torch-...whl",
          "sha256": "<64 hex>", "size": 123, "source": "https://github.com/pytorch/pytorch",
          "commit": "c21dc11", "build_host": "build1", "date": "2025-01-01T00:00:00Z",
          "no_deps": true, "import_name": "torch", "features": ["xccl"],
          "extras": [], "requires": []}],
        "lock": {"requirements": ["msgspec"], "constraints": ["torch==2.7.0a0+gitc21dc11"],
          "packages": [{"name": "msgspec", "version": "0.19.0", "filename": "msgspec-...whl",
            "sha256": "<64 hex>", "size": 123, "modules": ["msgspec"]}]}}

   `wheels` are what we built; `lock` is everything else the environment needs
   (resolved by real pip against the built wheels, see wheelhouse.py), each file in
   the same directory. Together they are the closed environment provision installs.

2. Each node's `<state_dir>/wheels.json` (written by provision after a wheel was
   installed AND verified by import; read by provision to skip work and by doctor to
   compare wheel hashes across nodes)::

       {"format": 1, "wheels": {"torch": {"version": "...", "sha256": "...",
         "filename": "...", "python": "/opt/xpufleet/venv/bin/python",
         "installed_at": "2025-01-01T00:00:00Z"}}}

   Keys are normalized distribution names (PEP 503: lowercase, runs of `-_.` -> `-`).
   Doctor: `parse_node_state(text)` on the file's content (empty/absent -> {}).

Wheels install in dependency order (`WHEEL_ORDER`): vLLM imports torch, SGLang imports vLLM.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..nodestate import normalize

FORMAT = 1
MANIFEST_NAME = "manifest.json"
#: install order of the stack; wheels not named here come after, by name
WHEEL_ORDER = ("torch", "triton", "vllm", "sglang")

#: build features a wheel can promise, and the Python expression that proves each one
FEATURE_CHECKS: dict[str, str] = {
    "xccl": "__import__('torch.distributed').distributed.is_xccl_available()",
    "xpu": "__import__('torch').xpu.is_available()",
}

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_WHEEL_NAME = re.compile(
    r"^(?P<name>[A-Za-z0-9_.]+)-(?P<version>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$"
)


def parse_wheel_filename(filename: str) -> tuple[str, str]:
    """(normalized name, version) from a wheel file name (PEP 427)."""
    match = _WHEEL_NAME.match(filename)
    if not match:
        raise InputError(f"not a wheel file name: {filename}", key="filename")
    return normalize(match.group("name")), match.group("version")


@dataclass(frozen=True)
class WheelEntry:
    """One built wheel the manifest promises, and how to check it after install."""

    name: str
    version: str
    filename: str
    sha256: str
    size: int
    source: str = ""
    commit: str = ""
    build_host: str = ""
    date: str = ""
    no_deps: bool = True
    import_name: str = ""
    features: tuple[str, ...] = ()
    #: extras resolved into the lock with this wheel (SGLang: all_xpu)
    extras: tuple[str, ...] = ()
    #: requirement lines the wheel's metadata lacks (vLLM's requirements-xpu.txt)
    requires: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return normalize(self.name)

    @property
    def module(self) -> str:
        return self.import_name or self.key.replace("-", "_")

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("features", "extras", "requires"):
            out[key] = list(getattr(self, key))
        return out


@dataclass(frozen=True)
class LockedDist:
    """One distribution of the lock: a wheel file in the wheelhouse, by sha256."""

    name: str
    version: str
    filename: str
    sha256: str
    size: int
    modules: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return normalize(self.name)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["modules"] = list(self.modules)
        return out

    @property
    def requirement(self) -> str:
        """The hash-checked requirement line pip installs it with (--require-hashes)."""
        return f"{self.name}=={self.version} --hash=sha256:{self.sha256}"


def sha256_file(path: Path) -> str:
    """The sha256 of a file's bytes, read in 4 MiB blocks (wheels are large)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(4 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def entry_for_file(path: Path, **meta: Any) -> WheelEntry:
    """A manifest entry for a wheel file: name/version from its name, sha256 and size of
    its bytes; `meta` adds source, commit, build_host, date, no_deps, import_name, features."""
    name, version = parse_wheel_filename(path.name)
    meta.setdefault("date", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    for key in ("features", "extras", "requires"):
        meta[key] = tuple(meta.get(key) or ())
    return WheelEntry(
        name=name,
        version=version,
        filename=path.name,
        sha256=sha256_file(path),
        size=path.stat().st_size,
        **meta,
    )


def order_key(entry: WheelEntry) -> tuple[int, str]:
    try:
        return WHEEL_ORDER.index(entry.key), entry.key
    except ValueError:
        return len(WHEEL_ORDER), entry.key


def _checked_file_item(item: Any, where: str, each: str, one: str, section: str) -> str:
    """What a wheel entry and a lock entry share: a mapping naming a file with its size and
    sha256; returns the sha256 (lower case)."""
    if not isinstance(item, dict):
        raise InputError(f"{each} must be a mapping", file=where, key=section)
    for key in ("name", "version", "filename", "sha256", "size"):
        if key not in item:
            raise InputError(f"{one} lacks '{key}'", file=where, key=key)
    sha = str(item["sha256"]).lower()
    if not _SHA256.match(sha):
        raise InputError(f"sha256 of {item['name']} is not 64 hex digits", file=where, key="sha256")
    return sha


def entry_from_json(item: Any, where: str) -> WheelEntry:
    """A manifest item, validated (bad manifest = bad input, exit 2, before any host)."""
    sha = _checked_file_item(item, where, "each wheel", "wheel entry", "wheels")
    features = tuple(item.get("features") or ())
    unknown = sorted(set(features) - set(FEATURE_CHECKS))
    if unknown:
        raise InputError(
            f"unknown feature(s) {unknown} of {item['name']} (known: {sorted(FEATURE_CHECKS)})",
            file=where,
            key="features",
        )
    known = {f for f in WheelEntry.__dataclass_fields__}
    extra = sorted(set(item) - known)
    if extra:
        raise InputError(
            f"unknown key(s) {extra} in wheel {item['name']}", file=where, key=extra[0]
        )
    return WheelEntry(
        name=str(item["name"]),
        version=str(item["version"]),
        filename=str(item["filename"]),
        sha256=sha,
        size=int(item["size"]),
        source=str(item.get("source", "")),
        commit=str(item.get("commit", "")),
        build_host=str(item.get("build_host", "")),
        date=str(item.get("date", "")),
        no_deps=bool(item.get("no_deps", True)),
        import_name=str(item.get("import_name", "")),
        features=features,
        extras=tuple(str(x) for x in item.get("extras") or ()),
        requires=tuple(str(x) for x in item.get("requires") or ()),
    )


def locked_from_json(item: Any, where: str) -> LockedDist:
    """One lock entry, validated like a wheel entry (bad lock = bad input, exit 2)."""
    sha = _checked_file_item(item, where, "each locked package", "locked package", "lock")
    return LockedDist(
        name=normalize(str(item["name"])),
        version=str(item["version"]),
        filename=str(item["filename"]),
        sha256=sha,
        size=int(item["size"]),
        modules=tuple(str(m) for m in item.get("modules") or ()),
    )


@dataclass
class Manifest:
    """files/wheels/manifest.json: the wheels every node gets, in install order."""

    path: Path
    wheels: list[WheelEntry] = field(default_factory=list)
    #: the rest of the closed environment (empty: `invoke build` has not locked yet)
    locked: list[LockedDist] = field(default_factory=list)
    requirements: list[str] = field(default_factory=list)
    constraints: list[str] = field(default_factory=list)

    @property
    def directory(self) -> Path:
        return self.path.parent

    def ordered(self) -> list[WheelEntry]:
        return sorted(self.wheels, key=order_key)

    def wheel_path(self, entry: WheelEntry) -> Path:
        return self.directory / entry.filename

    def upsert(self, entry: WheelEntry) -> None:
        """Replace the entry of the same distribution (one version of each is pushed)."""
        self.wheels = [w for w in self.wheels if w.key != entry.key] + [entry]

    def locked_path(self, dist: LockedDist) -> Path:
        return self.directory / dist.filename

    @property
    def size(self) -> int:
        """Bytes of the whole closed environment (built wheels + lock)."""
        return sum(w.size for w in self.wheels) + sum(d.size for d in self.locked)

    def module_map(self) -> dict[str, str]:
        """Top-level module -> the locked distribution that provides it."""
        out = {m: d.name for d in self.locked for m in d.modules}
        out.update({w.module.split(".")[0]: w.key for w in self.wheels})
        return out

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"format": FORMAT, "wheels": [w.to_json() for w in self.ordered()]}
        if self.locked or self.requirements or self.constraints:
            doc["lock"] = {
                "requirements": self.requirements,
                "constraints": self.constraints,
                "packages": [d.to_json() for d in sorted(self.locked, key=lambda d: d.key)],
            }
        return doc

    def save(self) -> None:
        """Write atomically (a build interrupted mid-write never leaves half a manifest)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        tmp.replace(self.path)


def load_manifest(path: Path) -> Manifest:
    """The manifest at `path`; absent file = no wheels to push."""
    if not path.exists():
        return Manifest(path)
    where = str(path)
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON: {exc.msg}", file=where, line=exc.lineno) from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("wheels", []), list):
        raise InputError("expected {'format': 1, 'wheels': [...]}", file=where, key="wheels")
    entries = [entry_from_json(item, where) for item in doc.get("wheels", [])]
    lock = doc.get("lock") or {}
    if not isinstance(lock, dict) or not isinstance(lock.get("packages", []), list):
        raise InputError("expected lock: {'packages': [...]}", file=where, key="lock")
    locked = [locked_from_json(item, where) for item in lock.get("packages", [])]
    seen: set[str] = set()
    for key in [e.key for e in entries] + [d.key for d in locked]:
        if key in seen:
            raise InputError(f"distribution {key} listed twice", file=where, key="name")
        seen.add(key)
    return Manifest(
        path,
        entries,
        locked,
        [str(r) for r in lock.get("requirements") or []],
        [str(c) for c in lock.get("constraints") or []],
    )

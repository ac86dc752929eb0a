"""Model weights on a node: the probe's raw listing parsed into typed facts (pure).

What a complete model directory holds is decided here once, for doctor and for
`model.stage`: `config.json`, the tokenizer files, `model.safetensors.index.json` and
every shard the index names, each with its expected size. The sizes come from the
staging manifest kept in the directory (`MANIFEST_NAME`, written by `model.stage`),
or, before any staging, from each shard's own safetensors header (8-byte little-endian
header length + JSON header whose last `data_offsets` end gives the data size).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .registry import Fact

#: the manifest `model.stage` keeps in the model directory on every node
MANIFEST_NAME = ".xpufleet-manifest.json"
INDEX_NAME = "model.safetensors.index.json"
CONFIG_NAME = "config.json"
#: Hugging Face tokenizers: the config and one of the tokenizer bodies
TOKENIZER_CONFIG = "tokenizer_config.json"
TOKENIZER_BODIES = ("tokenizer.json", "tokenizer.model")
#: file systems that many nodes mount from one server/cluster (prefix match)
NETWORK_FS = ("nfs", "lustre", "gpfs", "beegfs", "ceph", "glusterfs", "fuse.", "9p", "virtiofs")
#: the hash `model.stage` records: hashlib.sha256 is in every python3 (nodes too) and,
#: with the SHA extensions, the fastest of its hashes (relay/node.py hashes every byte)
HASH_NAME = "sha256"


@dataclass(frozen=True)
class ManifestFile:
    size: int
    hash: str
    #: the file's mtime on that node when it was verified (None: unknown)
    mtime_ns: int | None = None


@dataclass(frozen=True)
class Manifest:
    files: dict[str, ManifestFile]
    hash_name: str = HASH_NAME
    source: str | None = None

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files.values())

    def to_json(self) -> dict[str, Any]:
        files = {}
        for name, f in sorted(self.files.items()):
            entry: dict[str, Any] = {"size": f.size, "hash": f.hash}
            if f.mtime_ns is not None:
                entry["mtime_ns"] = f.mtime_ns
            files[name] = entry
        return {"format": 1, "hash": self.hash_name, "source": self.source, "files": files}


def parse_manifest(text: str) -> Manifest:
    """A manifest document -> Manifest; ValueError names what is wrong."""
    doc = json.loads(text)
    if not isinstance(doc, dict) or not isinstance(doc.get("files"), dict):
        raise ValueError("no 'files' mapping")
    files = {}
    for name, entry in doc["files"].items():
        if not isinstance(entry, dict) or "size" not in entry or "hash" not in entry:
            raise ValueError(f"entry {name!r} lacks size or hash")
        mtime = entry.get("mtime_ns")
        files[str(name)] = ManifestFile(
            int(entry["size"]), str(entry["hash"]), int(mtime) if mtime is not None else None
        )
    return Manifest(files, str(doc.get("hash") or HASH_NAME), doc.get("source"))


def index_shards(text: str) -> list[str]:
    """The shard files a `model.safetensors.index.json` names (its weight_map values)."""
    doc = json.loads(text)
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(weight_map, dict):
        raise ValueError("no 'weight_map' mapping")
    return sorted({str(v) for v in weight_map.values()})


@dataclass(frozen=True)
class Mount:
    fstype: str
    source: str
    point: str
    root: str

    @property
    def network(self) -> bool:
        return self.fstype.startswith(NETWORK_FS)


def storage_key(mount: Mount | None, identity: tuple[int, int] | None) -> tuple[Any, ...] | None:
    """Nodes with the same key see ONE directory: the same file system (type, source,
    root) and directory inode; a local file system must also have the same device (a
    network one's device number is per client). None: cannot tell."""
    if mount is None or identity is None:
        return None
    dev, ino = identity
    return (mount.fstype, mount.source, mount.root, ino, None if mount.network else dev)


@dataclass
class ModelDir:
    """One node's model directory as the probe saw it."""

    path: str
    exists: bool
    #: file name -> (size, mtime_ns or None); None when the directory could not be listed
    files: dict[str, tuple[int, int | None]] | None = None
    manifest: Manifest | None = None
    manifest_error: str | None = None
    shards: list[str] | None = None
    index_error: str | None = None
    #: shard -> expected size from its header, or the reason it could not be read
    header_sizes: dict[str, int | str] = field(default_factory=dict)
    mount: Mount | None = None
    #: (st_dev, st_ino) of the directory
    identity: tuple[int, int] | None = None
    error: str | None = None

    @property
    def bytes_on_disk(self) -> int:
        return sum(size for size, _ in (self.files or {}).values())


def _files(raw: dict[str, Any]) -> dict[str, tuple[int, int | None]] | None:
    if isinstance(raw.get("files"), dict):
        out: dict[str, tuple[int, int | None]] = {}
        for name, value in raw["files"].items():
            size, mtime = (value + [None])[:2] if isinstance(value, list) else (value, None)
            out[str(name)] = (int(size), int(mtime) if mtime is not None else None)
        return out
    if isinstance(raw.get("files_text"), str):  # the sh probe: "SIZE NAME" lines
        out = {}
        for line in raw["files_text"].splitlines():
            size, _, name = line.partition(" ")
            if size.isdigit() and name:
                out[name] = (int(size), None)
        return out
    return None


def parse_model(raw: Any) -> ModelDir | None:
    """The probe's `model` entry -> ModelDir (None when no model_path was probed)."""
    if not isinstance(raw, dict):
        return None
    model = ModelDir(path=str(raw.get("path")), exists=bool(raw.get("exists")))
    model.error = raw.get("error")
    model.files = _files(raw)
    if isinstance(raw.get("manifest_text"), str):
        try:
            model.manifest = parse_manifest(raw["manifest_text"])
        except (ValueError, TypeError) as exc:
            model.manifest_error = f"{MANIFEST_NAME} unreadable: {exc}"
    if isinstance(raw.get("index_text"), str):
        try:
            model.shards = index_shards(raw["index_text"])
        except (ValueError, TypeError) as exc:
            model.index_error = f"{INDEX_NAME} unreadable: {exc}"
    for name, entry in (raw.get("headers") or {}).items():
        if isinstance(entry, dict):
            expected = entry.get("expected")
            model.header_sizes[str(name)] = (
                int(expected) if expected is not None else str(entry.get("error"))
            )
    mount = raw.get("mount")
    if isinstance(mount, dict):
        model.mount = Mount(
            str(mount.get("fstype")), str(mount.get("source")), str(mount.get("point")),
            str(mount.get("root")),
        )  # fmt: skip
    elif raw.get("fstype"):
        model.mount = Mount(str(raw["fstype"]), "?", "?", "?")
    directory = raw.get("dir")
    if isinstance(directory, dict):
        model.identity = (int(directory.get("dev", 0)), int(directory.get("ino", 0)))
    return model


@dataclass
class Verdict:
    """How complete one node's model directory is (pure, from ModelDir)."""

    #: file -> expected size (None: any size)
    expected: dict[str, int | None]
    sizes_from: str
    missing: list[str] = field(default_factory=list)
    #: (file, size found, size expected)
    wrong_size: list[tuple[str, int, int]] = field(default_factory=list)
    #: files whose mtime differs from the manifest's (replaced since they were staged)
    changed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.wrong_size or self.changed or self.problems)

    def describe(self) -> str:
        parts = []
        if self.missing:
            parts.append(f"missing {_names(self.missing)}")
        for name, have, want in self.wrong_size:
            word = "short" if have < want else "too long"
            parts.append(f"{name} {word}: {have} of {want} bytes")
        if self.changed:
            parts.append(f"changed since staged (mtime differs): {_names(self.changed)}")
        parts += self.problems
        return "; ".join(parts)


def _names(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def verdict(model: ModelDir) -> Verdict:
    """What should be in the directory and what is missing, short or replaced."""
    files = model.files or {}
    if model.manifest is not None:
        expected: dict[str, int | None] = {n: f.size for n, f in model.manifest.files.items()}
        out = Verdict(expected, "manifest")
        for name, entry in sorted(model.manifest.files.items()):
            if name not in files:
                out.missing.append(name)
            elif files[name][0] != entry.size:
                out.wrong_size.append((name, files[name][0], entry.size))
            elif entry.mtime_ns is not None and files[name][1] not in (None, entry.mtime_ns):
                out.changed.append(name)
        return out
    expected = {CONFIG_NAME: None, TOKENIZER_CONFIG: None, INDEX_NAME: None}
    body = next((b for b in TOKENIZER_BODIES if b in files), TOKENIZER_BODIES[0])
    expected[body] = None
    out = Verdict(expected, "shard headers")
    if model.manifest_error:
        out.problems.append(model.manifest_error)
    if model.index_error:
        out.problems.append(model.index_error)
    for name in model.shards or []:
        header = model.header_sizes.get(name)
        expected[name] = header if isinstance(header, int) else None
        if isinstance(header, str) and name in files:
            out.problems.append(f"{name}: header unreadable ({header})")
    if model.shards is not None and not model.header_sizes and model.shards:
        out.sizes_from = "listing only (the probe read no headers)"
    for name, size in expected.items():
        if name not in files:
            out.missing.append(name)
        elif size is not None and files[name][0] != size:
            out.wrong_size.append((name, files[name][0], size))
    out.missing.sort()
    return out


__all__ = [
    "HASH_NAME",
    "INDEX_NAME",
    "MANIFEST_NAME",
    "Manifest",
    "ManifestFile",
    "ModelDir",
    "Mount",
    "Verdict",
    "index_shards",
    "parse_manifest",
    "parse_model",
    "verdict",
]


class ModelFiles(Fact["ModelDir | None"]):
    """The directory at model_path: sizes (stat), manifest, index, mount identity."""

    key = "model"
    python = 'model_facts(PARAMS.get("model_path"), PARAMS.get("model_manifest"))'
    background = True
    params = ("model_path", "model_manifest")
    sh = r"""if [ -z "$P_MODEL_PATH" ]; then
  printf 'null'
elif [ -d "$P_MODEL_PATH" ]; then
  printf '{"path": '; printf '%s' "$P_MODEL_PATH" | jstr
  printf ', "exists": true, "files_text": '
  for f in "$P_MODEL_PATH"/* "$P_MODEL_PATH"/.[!.]*; do
    [ -f "$f" ] && printf "%s %s\n" "$(stat -c %s -- "$f")" "${f##*/}"
  done | jstr
  printf ', "fstype": '; stat -f -c %T "$P_MODEL_PATH" 2>/dev/null | tr -d '\n' | jstr
  printf ', "manifest_text": '; jfile "$P_MODEL_PATH/$P_MODEL_MANIFEST"
  printf ', "index_text": '; jfile "$P_MODEL_PATH/model.safetensors.index.json"
  printf '}'
else
  printf '{"path": '; printf '%s' "$P_MODEL_PATH" | jstr; printf ', "exists": false}'
fi"""
    parse = staticmethod(parse_model)

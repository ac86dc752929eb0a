"""Model weights: is the directory at `model_path` complete on each node, and the same
everywhere? A missing or truncated shard otherwise shows only minutes into SGLang's
loading, and different shards on different nodes load different weights silently.
Stat only: sizes come from the staging manifest or from the shards' own headers."""

from __future__ import annotations

from collections.abc import Mapping

from ..facts.node import NodeFacts
from ..facts.weights import HASH_NAME, MANIFEST_NAME, ModelDir, storage_key
from ..facts.weights import verdict as files_verdict
from ..nodeset import fold
from ..results import Result
from . import FAIL, PASS, SKIP, WARN, Verdict, check, node_check, result, verdict

MODEL_SAME = check("model.same", "every node holds the same model files", "cluster")
GB = 1e9


@node_check(
    "model.files",
    "config, tokenizer, safetensors index and every shard present with its size",
)
def check_model_files(facts: NodeFacts, expect: object = None) -> Verdict:
    model = facts.model
    if model is None:
        return verdict(SKIP, "no model_path to check")
    wanted = "expected config.json, the tokenizer, the safetensors index and every shard it names"
    if not model.exists:
        return verdict(
            FAIL,
            f"{model.path} does not exist, {wanted} (stage it: invoke model.stage)",
            missing=["*"],
        )
    if model.error or model.files is None:
        return verdict(WARN, f"cannot list {model.path}: {model.error}, {wanted}")
    found = files_verdict(model)
    total = sum(size for name, (size, _) in model.files.items() if name in found.expected)
    how = f"sizes from the {found.sizes_from}"
    if found.ok:
        return verdict(
            PASS,
            f"found {len(found.expected)} files, {total / GB:.3g} GB at {model.path} ({how}), "
            f"{wanted}",
            files=len(found.expected),
            bytes=total,
        )
    return verdict(
        FAIL,
        f"{model.path}: {found.describe()} ({how}), {wanted}",
        missing=found.missing,
        wrong_size=[name for name, _, _ in found.wrong_size],
        changed=found.changed,
    )


def shared_storage(models: Mapping[str, ModelDir]) -> str | None:
    """A description when every node sees ONE directory (same file system, same source,
    same directory inode; a local file system must also have the same device), else None."""
    if len(models) < 2:
        return None
    keys = {storage_key(m.mount, m.identity) if m.exists else None for m in models.values()}
    if len(keys) != 1 or None in keys:
        return None
    fstype, source, _root, ino, dev = keys.pop()  # type: ignore[misc]
    kind = "network file system" if dev is None else "file system"
    return f"one {kind} ({fstype} {source}, directory inode {ino})"


def _signature(model: ModelDir) -> dict[str, tuple[int, str | None]]:
    """file -> (size, hash from the node's manifest or None); the manifest itself is left out."""
    manifest = model.manifest.files if model.manifest else {}
    # a manifest of an older xpufleet (blake2b-256): its hashes compare with nothing
    hashed_alike = model.manifest is not None and model.manifest.hash_name == HASH_NAME
    out = {}
    for name, (size, _mtime) in (model.files or {}).items():
        if name == MANIFEST_NAME or name.startswith("."):
            continue
        entry = manifest.get(name)
        same = entry is not None and entry.size == size and hashed_alike
        out[name] = (size, entry.hash if same and entry is not None else None)
    return out


def check_model_same(nodes: Mapping[str, NodeFacts]) -> Result:
    models = {h: f.model for h, f in nodes.items() if f.model is not None}
    if len(models) < 2:
        return result(
            MODEL_SAME, SKIP, f"{len(models)} node(s) with a model_path: nothing to compare"
        )
    shared = shared_storage(models)
    path = next(iter(models.values())).path
    if shared:
        return result(
            MODEL_SAME,
            PASS,
            f"{fold(models)} see {path} on {shared}: the same files everywhere, nothing to stage",
            shared=True,
        )
    absent = sorted(h for h, m in models.items() if not m.exists)
    present = {h: _signature(m) for h, m in models.items() if m.exists}
    names = sorted({n for sig in present.values() for n in sig})
    odd: dict[str, list[str]] = {h: [f"no {path}"] for h in absent}
    for name in names:
        sizes = {h: sig[name][0] if name in sig else None for h, sig in present.items()}
        counted = [s for s in sizes.values() if s is not None]
        majority = max(set(counted), key=lambda s: (counted.count(s), s)) if counted else None
        for host, size in sizes.items():
            if size is None:
                odd.setdefault(host, []).append(f"missing {name}")
            elif size != majority:
                word = "short" if size < (majority or 0) else "other size"
                odd.setdefault(host, []).append(f"{name} {word}: {size} vs {majority} bytes")
        hashes = {h: sig[name][1] for h, sig in present.items() if name in sig and sig[name][1]}
        values = list(hashes.values())
        if len(set(values)) > 1:
            common = max(set(values), key=lambda v: (values.count(v), v))
            for host, digest in hashes.items():
                if digest != common:
                    odd.setdefault(host, []).append(
                        f"{name} hash {digest[:12]} vs {common[:12]} elsewhere"
                    )
    hashed = sorted(h for h, m in models.items() if m.manifest is not None)
    if not odd:
        how = f"sizes and hashes ({fold(hashed)} staged)" if hashed else "sizes (no manifest yet)"
        return result(
            MODEL_SAME,
            PASS,
            f"found the same {len(names)} files on {fold(present)} ({how}), "
            "expected the same model everywhere",
        )
    shown = "; ".join(f"{host}: {', '.join(items[:4])}" for host, items in sorted(odd.items()))
    return result(
        MODEL_SAME,
        FAIL,
        f"odd ones out {fold(sorted(odd))}: {shown}; expected the same model files everywhere "
        "(repair: invoke model.stage)",
        odd=sorted(odd),
        differences={h: items for h, items in sorted(odd.items())},
    )


def model_bytes(nodes: Mapping[str, NodeFacts], node0: str | None) -> int | None:
    """The model's real size on disk (node 0's complete directory), for the fit check."""
    facts = nodes.get(node0) if node0 else None
    model = facts.model if facts else None
    if model is None or not model.exists or model.files is None:
        return None
    found = files_verdict(model)
    if not found.ok:
        return None
    return sum(size for name, (size, _) in model.files.items() if name in found.expected)

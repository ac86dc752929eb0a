"""A small, real-shaped model directory for the lab: safetensors shards + index.

The files follow the real formats (a shard is 8-byte little-endian header length, a
JSON header with dtype/shape/data_offsets per tensor, then the data; the index maps
every tensor to its shard, as Hugging Face's `model.safetensors.index.json` does), so
doctor and `model.stage` read them exactly as they read DeepSeek-R1. Content is
deterministic pseudo-random bytes (a seed per shard), so two labs agree byte for byte.
Also the model faults: a missing, a truncated and a different shard on one node.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
from pathlib import Path

from ..facts.weights import HASH_NAME, INDEX_NAME, MANIFEST_NAME, Manifest, ManifestFile
from ..relay import file_hash

LAB_MODEL = "xpufleet-lab-tiny"
#: the model faults: name -> what happens to shard 2 of the node's copy
MODEL_FAULTS = ("model_missing_shard", "model_short_shard", "model_other_shard")
TENSORS_PER_SHARD = 2


def shard_name(index: int, count: int) -> str:
    return f"model-{index:05d}-of-{count:05d}.safetensors"


def safetensors_bytes(tensors: dict[str, bytes]) -> bytes:
    """One safetensors file of F32 vectors (header padded to 8 bytes like the writer)."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, data in tensors.items():
        header[name] = {
            "dtype": "F32",
            "shape": [len(data) // 4],
            "data_offsets": [offset, offset + len(data)],
        }
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(tensors.values())


def _tensors(shard: int, shard_bytes: int, seed: str) -> dict[str, bytes]:
    rng = random.Random(f"{seed}:{shard}")
    each = max(4, (shard_bytes // TENSORS_PER_SHARD) // 4 * 4)
    return {
        f"model.layers.{shard}.mlp.experts.{t}.weight": rng.randbytes(each)
        for t in range(TENSORS_PER_SHARD)
    }


#: the lab SGLang stand-in's vocabulary (xpufleet/lab/standin/pkg/sglang/srt/model.py):
#: printable ASCII plus newline, then EOS; anything else reads as "?"
STANDIN_CHARS = "".join(chr(c) for c in range(32, 127)) + "\n"
STANDIN_EOS = "</s>"


def tokenizer_files() -> dict[str, str]:
    """A real Hugging Face fast tokenizer whose ids are the stand-in's (one token per
    character, "?" for the unknown, EOS last), so clients that load the model's tokenizer
    (the real `sglang.bench_serving` does, with `AutoTokenizer.from_pretrained`) count
    the tokens the stand-in counts. A BPE without merges splits into characters; the
    `Fuse` decoder joins them without spaces."""
    vocab = {ch: i for i, ch in enumerate(STANDIN_CHARS)}
    eos_id = len(STANDIN_CHARS)
    vocab[STANDIN_EOS] = eos_id
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": eos_id,
                "content": STANDIN_EOS,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
        ],
        "normalizer": None,
        "pre_tokenizer": None,
        "post_processor": None,
        "decoder": {"type": "Fuse"},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": "?",
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": [],
        },
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": STANDIN_EOS,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 4096,
    }
    return {
        "tokenizer.json": json.dumps(tokenizer, sort_keys=True) + "\n",
        "tokenizer_config.json": json.dumps(config, indent=2) + "\n",
    }


def write_model(dest: Path, *, shards: int = 3, shard_bytes: int = 256 << 10) -> Path:
    """Write the model directory (config, tokenizer, index, shards); idempotent."""
    dest.mkdir(parents=True, exist_ok=True)
    weight_map: dict[str, str] = {}
    total = 0
    for index in range(1, shards + 1):
        name = shard_name(index, shards)
        tensors = _tensors(index, shard_bytes, "xpufleet-lab")
        data = safetensors_bytes(tensors)
        total += sum(len(t) for t in tensors.values())
        weight_map.update({tensor: name for tensor in tensors})
        _write_if_different(dest / name, data)
    index_doc = {"metadata": {"total_size": total}, "weight_map": weight_map}
    config = {
        "architectures": ["DeepseekV3ForCausalLM"],
        "model_type": "deepseek_v3",
        "hidden_size": 64,
        "num_hidden_layers": shards,
        "torch_dtype": "float32",
    }
    texts = {
        INDEX_NAME: json.dumps(index_doc, indent=2, sort_keys=True) + "\n",
        "config.json": json.dumps(config, indent=2) + "\n",
        **tokenizer_files(),
    }
    for name, text in texts.items():
        _write_if_different(dest / name, text.encode())
    return dest


def write_sparse_model(dest: Path, *, total_bytes: int, shards: int) -> Path:
    """A model of DeepSeek-R1's size that costs no disk: each shard is a real header and
    a sparse data section (doctor only stats it), for the fit check at real scale."""
    write_model(dest, shards=shards, shard_bytes=4096)
    each = total_bytes // shards // 4 * 4
    for index in range(1, shards + 1):
        tensor = f"model.layers.{index}.mlp.experts.0.weight"
        header = safetensors_bytes({tensor: b""})
        length = struct.unpack("<Q", header[:8])[0]
        doc = json.loads(header[8 : 8 + length])
        doc[tensor].update(shape=[each // 4], data_offsets=[0, each])
        text = json.dumps(doc, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)
        path = dest / shard_name(index, shards)
        with path.open("wb") as fh:
            fh.write(struct.pack("<Q", len(text)) + text)
            fh.truncate(8 + len(text) + each)
    (dest / MANIFEST_NAME).unlink(missing_ok=True)
    return dest


def _write_if_different(path: Path, data: bytes) -> None:
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def install(source: Path, dest: Path) -> None:
    """Make `dest` an exact, verified copy of `source` with its manifest (as if staged)."""
    dest.mkdir(parents=True, exist_ok=True)
    files = {}
    for entry in sorted(source.iterdir()):
        if not entry.is_file() or entry.name.startswith("."):
            continue
        target = dest / entry.name
        _write_if_different(target, entry.read_bytes())
        stat = target.stat()
        files[entry.name] = ManifestFile(stat.st_size, file_hash(target), stat.st_mtime_ns)
    for stale in dest.iterdir():
        if stale.is_file() and stale.name not in files and stale.name != MANIFEST_NAME:
            stale.unlink()
    manifest = Manifest(files, HASH_NAME, f"lab:{source}")
    (dest / MANIFEST_NAME).write_text(json.dumps(manifest.to_json(), indent=1) + "\n")


def break_model(dest: Path, fault: str, shard: int = 2) -> str:
    """Apply one model fault to a node's copy; returns the file it touched."""
    shards = sorted(p for p in dest.glob("*.safetensors"))
    target = shards[min(shard, len(shards)) - 1]
    if fault == "model_missing_shard":
        target.unlink()
    elif fault == "model_short_shard":
        with target.open("r+b") as fh:
            fh.truncate(target.stat().st_size // 2)
    elif fault == "model_other_shard":
        # another revision of the same shard: same header and size, other weights
        raw = target.read_bytes()
        head = 8 + struct.unpack("<Q", raw[:8])[0]
        body = random.Random("another-revision").randbytes(len(raw) - head)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(raw[:head] + body)
        os.replace(tmp, target)
    else:
        raise ValueError(f"unknown model fault {fault}")
    return target.name


def remove(dest: Path) -> None:
    shutil.rmtree(dest, ignore_errors=True)

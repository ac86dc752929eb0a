"""Contract with the REAL benchmark client, `sglang.bench_serving` of sglang 0.4.3.post2
(PyPI, the release the SGLang fork is based on; its env is made once per machine by
`xpufleet.lab.upstream_sglang`): the argv `invoke bench` builds parses with the tool's own
argparse for both engines, and the lab model's tokenizer, loaded by the tool's
`AutoTokenizer.from_pretrained`, counts the tokens the lab's SGLang stand-in counts.
One interpreter for everything (importing transformers takes seconds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from xpufleet.bench.configs import BenchConfig, serving_argv
from xpufleet.lab.model import write_model
from xpufleet.lab.standin import SOURCE_DIR
from xpufleet.lab.upstream_sglang import ensure_upstream_sglang

#: run in the real env: each argv through bench_serving's __main__ (argparse, then its
#: GET /v1/models, which nothing answers: exit 1 after parsing; a refused flag is exit 2),
#: then the model's tokenizer as the tool loads it
DRIVER = r"""
import contextlib, io, json, runpy, sys
doc = json.load(sys.stdin)
out = {"runs": []}
for argv in doc["argvs"]:
    sys.argv = ["bench_serving", *argv]
    buf = io.StringIO()
    code = 0
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        try:
            runpy.run_module("sglang.bench_serving", run_name="__main__")
        except SystemExit as exc:
            code = exc.code
    out["runs"].append({"code": code, "output": buf.getvalue()[-3000:]})
from sglang.bench_serving import get_tokenizer
tok = get_tokenizer(doc["model"])
out["ids"] = tok.encode(doc["text"], add_special_tokens=False)
out["decoded"] = tok.decode(out["ids"])
out["eos"] = tok.eos_token_id
print(json.dumps(out))
"""

TEXT = "Tensor parallelism splits every layer.\n  é?\t~"


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> dict:
    python = ensure_upstream_sglang()
    model = write_model(tmp_path_factory.mktemp("model") / "m", shards=1, shard_bytes=64)
    config = BenchConfig("x", batch_size=2, input_len=64, output_len=8, tp=2)
    argvs = [
        serving_argv(
            config,
            host="127.0.0.1",
            port=9,  # discard: nothing answers
            dataset_path="/nonexistent/sharegpt.json",
            tokenizer=str(model),
            output_file="/nonexistent/out.jsonl",
            python="unused",
            backend=backend,
        )[3:]  # without `python -m sglang.bench_serving`
        for backend in ("sglang", "vllm")
    ]
    proc = subprocess.run(
        [str(python), "-c", DRIVER],
        input=json.dumps({"argvs": argvs, "model": str(model), "text": TEXT}),
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_bench_argv_parses_with_the_real_client_for_both_engines(real: dict) -> None:
    for run in real["runs"]:
        # parsed, then failed only at the server: argparse would exit 2 with "usage:"
        assert run["code"] == 1, run["output"]
        assert "Failed to fetch model from http://127.0.0.1:9/v1/models" in run["output"]
        assert "usage:" not in run["output"]


def test_lab_model_tokenizer_counts_as_the_standin(real: dict) -> None:
    sys.path.insert(0, str(SOURCE_DIR))
    try:
        from sglang.srt.model import EOS_ID, decode, encode
    finally:
        sys.path.remove(str(SOURCE_DIR))
    assert real["ids"] == encode(TEXT)  # one token per character, "?" for the unknown
    assert real["decoded"] == decode(encode(TEXT))
    assert real["eos"] == EOS_ID

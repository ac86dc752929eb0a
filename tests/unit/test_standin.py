"""The lab's SGLang stand-in: its wheel, its CLI, and a model that really needs every rank."""

from __future__ import annotations

import hashlib
import multiprocessing
import re
import sys
import zipfile
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from xpufleet.lab.standin import SOURCE_DIR, build_wheel, version

sys.path.insert(0, str(SOURCE_DIR))
import torch  # noqa: E402
from sglang.srt.model import (  # noqa: E402
    EOS_ID,
    TinyTPModel,
    apply_chat_template,
    decode,
    encode,
    reference_completion,
)
from sglang.srt.server_args import prepare_server_args  # noqa: E402
from sglang.srt.utils import free_port  # noqa: E402

PROMPTS = ["Hello, world", apply_chat_template([{"role": "user", "content": "What is 2+2?"}])]


def test_version_says_it_is_the_lab_stand_in_of_the_fork() -> None:
    assert version() == "0.4.3.post2+xpufleetlab"
    pyproject = (SOURCE_DIR / "pyproject.toml").read_text()
    assert re.search(r'^name = "sglang"$', pyproject, re.MULTILINE)
    assert re.search(rf'^version = "{re.escape(version())}"$', pyproject, re.MULTILINE)


def test_wheel_is_reproducible_and_complete(tmp_path: Path) -> None:
    first = build_wheel(tmp_path / "a")
    second = build_wheel(tmp_path / "b")
    assert first.name == "sglang-0.4.3.post2+xpufleetlab-py3-none-any.whl"
    assert (
        hashlib.sha256(first.read_bytes()).digest() == hashlib.sha256(second.read_bytes()).digest()
    )
    names = set(zipfile.ZipFile(first).namelist())
    for module in ("launch_server", "bench_one_batch", "srt/model", "srt/http_server"):
        assert f"sglang/{module}.py" in names
    dist_info = "sglang-0.4.3.post2+xpufleetlab.dist-info"
    assert {f"{dist_info}/METADATA", f"{dist_info}/WHEEL", f"{dist_info}/RECORD"} <= names
    record = zipfile.ZipFile(first).read(f"{dist_info}/RECORD").decode()
    assert "sglang/launch_server.py,sha256=" in record


def test_model_flag_works_as_a_prefix_of_model_path() -> None:
    args = prepare_server_args(["--model", "/models/x", "--tp-size", "8", "--device", "xpu"])
    assert args.model_path == "/models/x"
    assert args.tp_size == 8
    assert args.device == "xpu"
    assert args.served_model_name == "/models/x"


def test_defaults_are_sglangs() -> None:
    args = prepare_server_args(["--model-path", "m"])
    assert (args.host, args.port, args.device, args.watchdog_timeout) == (
        "127.0.0.1",
        30000,
        "cuda",
        300,
    )


@pytest.mark.parametrize(
    "bad",
    [["--dist-timeout", "60"], ["--no-such-flag"], ["--device", "tpu"], ["--tp-size", "x"]],
)
def test_unknown_or_bad_flags_are_rejected_like_argparse(
    bad: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        prepare_server_args(["--model-path", "m", *bad])
    assert info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_multinode_flags_are_checked() -> None:
    with pytest.raises(SystemExit):
        prepare_server_args(["--model-path", "m", "--tp-size", "8", "--nnodes", "3"])
    with pytest.raises(SystemExit):
        prepare_server_args(["--model-path", "m", "--tp-size", "8", "--nnodes", "2"])
    args = prepare_server_args(
        [
            "--model-path",
            "m",
            "--tp",
            "8",
            "--nnodes",
            "2",
            "--node-rank",
            "1",
            "--dist-init-addr",
            "10.0.0.1:29500",
        ]
    )
    assert (args.tp_per_node, args.dist_init_addr) == (4, "10.0.0.1:29500")


def test_tokenizer_round_trip_and_unknown_characters() -> None:
    assert decode(encode("Hi there!\n")) == "Hi there!\n"
    assert decode(encode("héllo")) == "h?llo"
    assert decode([EOS_ID]) == ""


def _rank_main(rank: int, tp: int, port: int, reduce: bool, out: Connection) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=tp)
    model = TinyTPModel(rank, tp, dist.all_reduce if reduce else None)
    answers = [decode(model.generate([encode(p)], 24)[0]) for p in PROMPTS]
    dist.destroy_process_group()
    out.send(answers)


def _answers_at(tp: int, reduce: bool = True) -> list[list[str]]:
    ctx = multiprocessing.get_context("fork")
    port = free_port()
    pipes, procs = [], []
    for rank in range(tp):
        reader, writer = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_rank_main, args=(rank, tp, port, reduce, writer))
        proc.start()
        pipes.append(reader)
        procs.append(proc)
    try:
        answers = []
        for reader in pipes:
            assert reader.poll(120), "a rank did not answer"
            answers.append(reader.recv())
        return answers
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()


@pytest.mark.parametrize("tp", [2, 4, 8])
def test_answers_are_identical_for_every_tp_over_real_gloo(tp: int) -> None:
    expected = [reference_completion(p, 24) for p in PROMPTS]
    assert all(expected), "the reference produced empty answers"
    for rank_answers in _answers_at(tp):
        assert rank_answers == expected


def test_every_answer_needs_every_rank() -> None:
    """Without the all_reduce each rank sees only its partial sums: answers change."""
    expected = [reference_completion(p, 24) for p in PROMPTS]
    for rank_answers in _answers_at(2, reduce=False):
        assert rank_answers != expected


def test_tp_that_does_not_divide_the_heads_is_refused() -> None:
    with pytest.raises(ValueError, match="divisible by tp_size"):
        TinyTPModel(0, 3)

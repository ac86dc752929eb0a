"""The stand-in's `python -m sglang.bench_serving`: SGLang 0.4.3's flags and result block,
real HTTP requests against a real stand-in server (one process, tp 2 over gloo), and its
output read back by xpufleet's own parser."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np  # noqa: E402
import pytest

from xpufleet.bench.parsers import parse_serving
from xpufleet.lab.standin import SOURCE_DIR

sys.path.insert(0, str(SOURCE_DIR))

from sglang import bench_serving as bs  # noqa: E402
from sglang.srt.model import encode  # noqa: E402
from sglang.srt.utils import free_port  # noqa: E402

READY = "The server is fired up and ready to roll!"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SOURCE_DIR)}


def _conversations(path: Path, count: int) -> Path:
    turns = [
        {"from": "human", "value": f"Question {i}: how do tiles split a model?"}
        for i in range(count)
    ]
    doc = [
        {"id": str(i), "conversations": [turn, {"from": "gpt", "value": "They shard it."}]}
        for i, turn in enumerate(turns)
    ]
    path.write_text(json.dumps(doc))
    return path


# --------------------------------------------------------------------------- pure parts


def test_unknown_flags_are_refused_as_argparse_refuses_them(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bs.main(["--backend", "sglang", "--random-input-len", "8", "--no-such-flag"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


def test_dataset_choices_are_checked_like_argparse(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bs.main(["--dataset-name", "generated-shared-prefix"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'generated-shared-prefix'" in capsys.readouterr().err


def test_the_flags_xpufleet_passes_parse_with_sglang_defaults() -> None:
    args = bs.build_parser().parse_args(
        "--backend sglang --dataset-name random --random-input-len 64 --random-output-len 8 "
        "--random-range-ratio 1 --num-prompts 4 --host 127.0.0.1 --port 30000 "
        "--max-concurrency 2 --seed 7 --output-file out.jsonl".split()
    )
    assert (args.random_input_len, args.random_output_len, args.num_prompts) == (64, 8, 4)
    assert args.request_rate == float("inf")  # all requests at once unless told
    assert (args.max_concurrency, args.seed, args.output_file) == (2, 7, "out.jsonl")
    # argparse prefixes work as in the real tool (`--random-input 256`)
    short = bs.build_parser().parse_args(["--random-input", "256", "--num-prompt", "3"])
    assert (short.random_input_len, short.num_prompts) == (256, 3)


def test_percentile_is_numpys_linear_interpolation() -> None:
    rng = random.Random(3)
    values = [rng.uniform(0, 10) for _ in range(37)]
    for q in (0, 50, 90, 95, 99, 100):
        assert bs.percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert bs.percentile([], 99) == 0.0


def test_random_prompts_have_exactly_the_length_with_ratio_one() -> None:
    convs = [("abc", "x"), ("", "skipped: empty prompt"), ("hello world", "y")]
    rows = bs.sample_random_requests(10, 4, 2, 1.0, convs, random.Random(1))
    assert [(r.prompt_len, r.output_len) for r in rows] == [(10, 4), (10, 4)]
    for row in rows:
        assert len(encode(row.prompt)) == 10
        assert row.prompt in ("abcabcabca", "hello worl")


def test_random_lengths_vary_below_ratio_one_and_rows_stop_at_the_conversations() -> None:
    convs = [(f"prompt {i}", "") for i in range(50)]
    rows = bs.sample_random_requests(100, 20, 40, 0.0, convs, random.Random(5))
    assert len(rows) == 40
    assert all(1 <= r.prompt_len <= 100 and 0 <= r.output_len <= 20 for r in rows)
    assert len({r.prompt_len for r in rows}) > 1
    assert len(bs.sample_random_requests(8, 2, 40, 1.0, convs[:3], random.Random(5))) == 3


def test_no_dataset_file_fails_like_an_offline_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    if bs.read_conversations(os.path.join("/tmp", bs.SHAREGPT_URL.split("/")[-1])) is not None:
        pytest.skip("a cached ShareGPT download exists on this machine")
    with pytest.raises(bs.DatasetUnavailable, match="--dataset-path"):
        bs.sharegpt_conversations(str(tmp_path / "missing.json"))
    assert f"Downloading from {bs.SHAREGPT_URL}" in capsys.readouterr().out


def _output(latency: float, ttft: float, out_len: int, itl: list[float]) -> bs.RequestOutput:
    return bs.RequestOutput(
        generated_text="x" * out_len,
        success=True,
        latency=latency,
        ttft=ttft,
        itl=itl,
        prompt_len=16,
        output_len=out_len,
    )


def test_metrics_follow_sglangs_definitions() -> None:
    outputs = [
        _output(1.0, 0.2, 5, [0.2, 0.2, 0.2, 0.2]),
        _output(2.0, 0.5, 4, [0.5, 0.5, 0.5]),
        bs.RequestOutput(success=False, error="HTTP 503", prompt_len=16, output_len=4),
    ]
    metrics, output_lens = bs.calculate_metrics(outputs, duration_s=4.0)
    assert (metrics.completed, metrics.total_input, metrics.total_output) == (2, 32, 9)
    assert output_lens == [5, 4, 0]
    assert metrics.request_throughput == pytest.approx(0.5)
    assert metrics.total_throughput == pytest.approx((32 + 9) / 4.0)
    assert metrics.mean_tpot_ms == pytest.approx(np.mean([0.8 / 4, 1.5 / 3]) * 1000)
    assert metrics.median_e2e_latency_ms == pytest.approx(1500.0)
    assert metrics.p99_itl_ms == pytest.approx(np.percentile([0.2] * 4 + [0.5] * 3, 99) * 1000)
    assert metrics.concurrency == pytest.approx(3.0 / 4.0)


def test_result_block_is_the_0_4_3_layout_and_xpufleet_parses_it() -> None:
    outputs = [_output(1.0, 0.25, 5, [0.2] * 4), _output(3.0, 0.75, 5, [0.5] * 4)]
    metrics, _ = bs.calculate_metrics(outputs, duration_s=3.5)
    text = bs.format_result("sglang", float("inf"), None, 3.5, metrics)
    lines = text.splitlines()
    assert lines[1] == "=" * 12 + " Serving Benchmark Result " + "=" * 12
    assert f"{'Successful requests:':<40} {2:<10}" in lines
    assert f"{'Max reqeuest concurrency:':<40} {'not set':<10}" in lines
    labels = [line.split(":")[0] for line in lines if line.endswith(" ") and ":" in line]
    fixture = FIXTURES / "13c_sglang_bench_serving_result_v0.4.3_typo_PARTIAL_issue6681.txt"
    fixture_labels = [
        line.split(":")[0] for line in fixture.read_text().splitlines() if ":" in line
    ]
    assert labels[: len(fixture_labels)] == fixture_labels  # the era's labels, in order
    assert lines[-1] == "=" * 50
    parsed = parse_serving(text)
    assert parsed.complete and parsed.backend == "sglang"
    assert parsed.max_concurrency is None and parsed.request_rate == float("inf")
    assert parsed.successful_requests == 2 and parsed.total_generated_tokens == 10
    assert parsed.e2e_latency_ms is not None and parsed.e2e_latency_ms.median == 2000.0
    assert parsed.ttft_ms is not None and parsed.ttft_ms.mean == 500.0
    assert parsed.tpot_ms is not None and parsed.tpot_ms.p(99) is not None
    assert parsed.itl_ms is not None and parsed.itl_ms.median == pytest.approx(350.0)
    assert parsed.extra == {}


# --------------------------------------------------------------------------- against a server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """One stand-in server: tp 2 in one process group (gloo), on a free port."""
    logs = tmp_path_factory.mktemp("bench-serving")
    port = free_port()
    argv = [sys.executable, "-m", "sglang.launch_server", "--model", "/models/lab-tiny"]
    argv += ["--served-model-name", "lab-tiny", "--tp-size", "2", "--device", "cpu"]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    log_path = logs / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=_env())
    try:
        deadline = time.monotonic() + 120
        while READY not in log_path.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log_path.read_text()
            time.sleep(0.2)
        assert READY in log_path.read_text(), log_path.read_text()
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


def _bench(port: int, tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    dataset = _conversations(tmp_path / "sharegpt.json", 8)
    argv = [sys.executable, "-m", "sglang.bench_serving", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--dataset-path", str(dataset), *flags]
    return subprocess.run(
        argv, capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=180
    )


def test_random_dataset_streamed_to_generate(server: int, tmp_path: Path) -> None:
    proc = _bench(
        server,
        tmp_path,
        *"--backend sglang --dataset-name random --random-input-len 24 --random-output-len 6 "
        "--random-range-ratio 1 --num-prompts 3 --output-file result.jsonl".split(),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Initial test run completed. Starting main benchmark run..." in proc.stdout
    result = parse_serving(proc.stdout)
    assert result.successful_requests == 3
    assert result.total_input_tokens == 3 * 24
    assert 0 < result.total_generated_tokens <= 3 * 6  # the tiny model may stop at EOS
    assert result.total_generated_tokens == result.total_generated_tokens_retokenized
    assert result.duration_s is not None and result.duration_s > 0
    record = json.loads((tmp_path / "result.jsonl").read_text().splitlines()[-1])
    assert record["completed"] == 3 and record["total_input_tokens"] == 72
    assert record["lab_standin"] is True


def test_openai_backend_without_streaming_one_at_a_time(server: int, tmp_path: Path) -> None:
    proc = _bench(
        server,
        tmp_path,
        *"--backend sglang-oai --dataset-name random --random-input-len 12 "
        "--random-output-len 4 --random-range-ratio 1 --num-prompts 2 --disable-stream "
        "--max-concurrency 1 --request-rate 20".split(),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = parse_serving(proc.stdout)
    assert (result.successful_requests, result.total_input_tokens) == (2, 24)
    assert result.max_concurrency == 1 and result.request_rate == 20.0
    assert list(tmp_path.glob("sglang-oai_*_2_12_4.jsonl"))  # the real default file name


def test_no_server_fails_with_sglangs_hint(tmp_path: Path) -> None:
    proc = _bench(free_port(), tmp_path, "--dataset-name", "random", "--num-prompts", "1")
    assert proc.returncode == 1
    assert "Please specify the correct host and port using `--host` and `--port`." in proc.stdout
    assert "Serving Benchmark Result" not in proc.stdout

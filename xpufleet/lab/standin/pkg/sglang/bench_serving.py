"""`python -m sglang.bench_serving`: online serving benchmark against a running server, in
the format of SGLang 0.4.3 (lab stand-in, NOT SGLang).

Like the real tool it sends real HTTP requests to the server: `--backend sglang` to
/generate (streamed unless --disable-stream), `sglang-oai`/`vllm`/`lmdeploy` to the
OpenAI /v1/completions; all at once (--request-rate inf, the default) or as a Poisson
process, at most --max-concurrency at a time, after one initial test request. It prints
the `Serving Benchmark Result` block as 0.4.3 did (`{:<40} {:<10}` lines, its
"Max reqeuest concurrency" typo, TTFT/TPOT/ITL sections) and appends one JSON record to
--output-file. Unknown flags are refused as argparse refuses them (exit 2).

Datasets, as in 0.4.3: `random` draws each prompt's length from
[max(int(len * ratio), 1), len] (`--random-range-ratio 1`: exactly len) and takes its
tokens from ShareGPT conversations: from --dataset-path, or else the real tool downloads
ShareGPT, which the lab cannot do; it fails here as it would on an offline cluster.
`sharegpt` uses the conversations themselves. Tokens are the stand-in model's characters
(--model/--tokenizer are accepted; the stand-in has one tokenizer). Standard library
only: threads and urllib instead of asyncio and aiohttp.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .srt.model import decode, encode

SHAREGPT_URL = (
    "https://huggingface.co/datasets/anon8231489123/ShareGPT_Vicuna_unfiltered/resolve/main/"
    "ShareGPT_V3_unfiltered_cleaned_split.json"
)
DEFAULT_PORTS = {"sglang": 30000, "sglang-native": 30000, "lmdeploy": 23333, "vllm": 8000}
BACKENDS = ("sglang", "sglang-native", "sglang-oai", "vllm", "lmdeploy")
#: the real tool gives aiohttp 6 hours per request
REQUEST_TIMEOUT_S = 6 * 60 * 60
#: threads at most; the real tool's asyncio tasks have no bound, the stand-in serves one
#: batch at a time anyway
MAX_THREADS = 256


class DatasetUnavailable(Exception):
    pass


@dataclass
class DatasetRow:
    prompt: str
    prompt_len: int
    output_len: int


@dataclass
class RequestInput:
    prompt: str
    api_url: str
    prompt_len: int
    output_len: int
    model: str
    extra_request_body: dict[str, Any]


@dataclass
class RequestOutput:
    generated_text: str = ""
    success: bool = False
    latency: float = 0.0
    ttft: float = 0.0
    itl: list[float] = field(default_factory=list)
    prompt_len: int = 0
    output_len: int = 0
    error: str = ""


@dataclass
class BenchmarkMetrics:
    completed: int
    total_input: int
    total_output: int
    total_output_retokenized: int
    request_throughput: float
    input_throughput: float
    output_throughput: float
    total_throughput: float
    mean_ttft_ms: float
    median_ttft_ms: float
    std_ttft_ms: float
    p99_ttft_ms: float
    mean_tpot_ms: float
    median_tpot_ms: float
    std_tpot_ms: float
    p99_tpot_ms: float
    mean_itl_ms: float
    median_itl_ms: float
    std_itl_ms: float
    p99_itl_ms: float
    mean_e2e_latency_ms: float
    median_e2e_latency_ms: float
    std_e2e_latency_ms: float
    p99_e2e_latency_ms: float
    concurrency: float


# --------------------------------------------------------------------------- arguments


def build_parser() -> argparse.ArgumentParser:
    """The flags of SGLang 0.4.3's bench_serving that the stand-in implements."""
    parser = argparse.ArgumentParser(
        prog="python -m sglang.bench_serving",
        description="Benchmark the online serving throughput (xpufleet lab stand-in).",
    )
    add = parser.add_argument
    add("--backend", type=str, choices=BACKENDS, default="sglang")
    add("--base-url", type=str, default=None)
    add("--host", type=str, default="0.0.0.0")
    add("--port", type=int)
    add("--dataset-name", type=str, default="sharegpt", choices=["sharegpt", "random"])
    add("--dataset-path", type=str, default="")
    add("--model", type=str)
    add("--tokenizer", type=str)
    add("--num-prompts", type=int, default=1000)
    add("--sharegpt-output-len", type=int, default=None)
    add("--random-input-len", type=int, default=1024)
    add("--random-output-len", type=int, default=1024)
    add("--random-range-ratio", type=float, default=0.0)
    add("--request-rate", type=float, default=float("inf"))
    add("--max-concurrency", type=int, default=None)
    add("--output-file", type=str)
    add("--disable-tqdm", action="store_true")
    add("--disable-stream", action="store_true")
    add("--seed", type=int, default=1)
    add("--disable-ignore-eos", action="store_true")
    add("--extra-request-body", type=str, metavar='{"key1": "value1", "key2": "value2"}')
    add("--profile", action="store_true")
    return parser


# --------------------------------------------------------------------------- datasets


def read_conversations(path: str) -> list[tuple[str, str]] | None:
    """First two turns of every ShareGPT conversation in `path`; None if not a JSON file."""
    if not path or not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            dataset = json.load(fh)
    except ValueError as exc:
        print(f"{path} exists but json loading fails ({exc=}), thus treat as invalid file")
        return None
    pairs = []
    for data in dataset if isinstance(dataset, list) else []:
        turns = data.get("conversations", data.get("conversation", []))
        if len(turns) >= 2:
            pairs.append((str(turns[0]["value"]), str(turns[1]["value"])))
    return pairs


def sharegpt_conversations(dataset_path: str) -> list[tuple[str, str]]:
    """The conversations of --dataset-path, or the cached download the real tool makes."""
    conversations = read_conversations(dataset_path)
    if conversations is not None:
        return conversations
    cached = os.path.join("/tmp", SHAREGPT_URL.split("/")[-1])
    conversations = read_conversations(cached)
    if conversations is not None:
        return conversations
    print(f"Downloading from {SHAREGPT_URL} to {cached}")
    raise DatasetUnavailable(
        f"cannot download {SHAREGPT_URL}: the lab has no network (an offline cluster "
        "neither); pass --dataset-path FILE, a ShareGPT-format JSON file"
    )


def sample_random_requests(
    input_len: int,
    output_len: int,
    num_prompts: int,
    range_ratio: float,
    conversations: list[tuple[str, str]],
    rng: random.Random,
) -> list[DatasetRow]:
    """Prompts of drawn lengths made of ShareGPT text (cut or repeated), as 0.4.3 does."""
    input_lens = [
        rng.randint(max(int(input_len * range_ratio), 1), input_len) for _ in range(num_prompts)
    ]
    output_lens = [
        rng.randint(int(output_len * range_ratio), output_len) for _ in range(num_prompts)
    ]
    shuffled = list(conversations)
    rng.shuffle(shuffled)
    rows: list[DatasetRow] = []
    for prompt, _completion in shuffled:
        index = len(rows)
        if index == num_prompts:
            break
        ids = encode(prompt)
        if not ids:
            continue
        wanted = input_lens[index]
        ids = (ids * (wanted // len(ids) + 1))[:wanted]
        rows.append(DatasetRow(decode(ids), wanted, output_lens[index]))
    print(f"#Input tokens: {sum(r.prompt_len for r in rows)}")
    print(f"#Output tokens: {sum(r.output_len for r in rows)}")
    return rows


def sample_sharegpt_requests(
    conversations: list[tuple[str, str]],
    num_prompts: int,
    fixed_output_len: int | None,
    rng: random.Random,
) -> list[DatasetRow]:
    shuffled = list(conversations)
    rng.shuffle(shuffled)
    rows: list[DatasetRow] = []
    for prompt, completion in shuffled:
        if len(rows) == num_prompts:
            break
        prompt_len = len(encode(prompt))
        out_len = len(encode(completion)) if fixed_output_len is None else fixed_output_len
        if prompt_len < 2 or out_len < 2:
            continue
        rows.append(DatasetRow(prompt, prompt_len, out_len))
    print(f"#Input tokens: {sum(r.prompt_len for r in rows)}")
    print(f"#Output tokens: {sum(r.output_len for r in rows)}")
    return rows


# --------------------------------------------------------------------------- requests


def _auth_headers() -> dict[str, str]:
    key = os.environ.get("OPENAI_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


def _post(url: str, payload: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", **_auth_headers()},
        method="POST",
    )
    return urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S)


def _events(response: Any) -> Any:
    """The payloads of a server-sent event stream (`data: ...` lines)."""
    for raw in response:
        line = raw.strip()
        if line:
            yield line.decode("utf-8").removeprefix("data:").strip()


def request_sglang_generate(req: RequestInput, *, stream: bool, ignore_eos: bool) -> RequestOutput:
    """One request to SGLang's native /generate, timed as 0.4.3's sglang backend times it."""
    payload = {
        "text": req.prompt,
        "sampling_params": {
            "temperature": 0.0,
            "max_new_tokens": req.output_len,
            "ignore_eos": ignore_eos,
        },
        "stream": stream,
        **req.extra_request_body,
    }
    output = RequestOutput(prompt_len=req.prompt_len, output_len=req.output_len)
    started = time.perf_counter()
    recent = started
    try:
        with _post(req.api_url, payload) as response:
            if not stream:
                doc = json.loads(response.read())
                output.latency = output.ttft = time.perf_counter() - started
                output.generated_text = doc["text"]
                output.output_len = int(doc["meta_info"]["completion_tokens"])
                output.success = True
                return output
            last_len = 0
            for chunk in _events(response):
                output.latency = time.perf_counter() - started
                if chunk == "[DONE]":
                    continue
                data = json.loads(chunk)
                if not data.get("text"):
                    continue
                now = time.perf_counter()
                output.generated_text = data["text"]
                output.output_len = int(data["meta_info"]["completion_tokens"])
                if output.ttft == 0.0:
                    output.ttft = now - started
                else:
                    new_tokens = output.output_len - last_len
                    if new_tokens == 0:
                        continue
                    output.itl.extend([(now - recent) / new_tokens] * new_tokens)
                recent = now
                last_len = output.output_len
            output.success = True
    except (OSError, ValueError, KeyError) as exc:
        output.error = _describe(exc)
    return output


def request_openai_completions(
    req: RequestInput, *, stream: bool, ignore_eos: bool
) -> RequestOutput:
    """One request to the OpenAI-compatible /v1/completions."""
    payload = {
        "model": req.model,
        "prompt": req.prompt,
        "temperature": 0.0,
        "best_of": 1,
        "max_tokens": req.output_len,
        "stream": stream,
        "ignore_eos": ignore_eos,
        **req.extra_request_body,
    }
    output = RequestOutput(prompt_len=req.prompt_len, output_len=req.output_len)
    started = time.perf_counter()
    recent = started
    try:
        with _post(req.api_url, payload) as response:
            if not stream:
                doc = json.loads(response.read())
                output.latency = output.ttft = time.perf_counter() - started
                output.generated_text = doc["choices"][0]["text"]
                usage = doc.get("usage") or {}
                output.output_len = int(usage.get("completion_tokens", req.output_len))
                output.success = True
                return output
            for chunk in _events(response):
                output.latency = time.perf_counter() - started
                if chunk == "[DONE]":
                    continue
                data = json.loads(chunk)
                usage = data.get("usage") or {}
                if "completion_tokens" in usage:
                    output.output_len = int(usage["completion_tokens"])
                text = data["choices"][0].get("text") or ""
                if not text:
                    continue
                now = time.perf_counter()
                if output.ttft == 0.0:
                    output.ttft = now - started
                else:
                    output.itl.append(now - recent)
                recent = now
                output.generated_text += text
            output.success = True
    except (OSError, ValueError, KeyError, IndexError) as exc:
        output.error = _describe(exc)
    return output


def _describe(exc: Exception) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    return f"{type(exc).__name__}: {exc}"


RequestFunc = Callable[..., RequestOutput]
REQUEST_FUNCS: dict[str, RequestFunc] = {
    "sglang": request_sglang_generate,
    "sglang-native": request_sglang_generate,
    "sglang-oai": request_openai_completions,
    "vllm": request_openai_completions,
    "lmdeploy": request_openai_completions,
}


def _post_quietly(url: str) -> bool:
    try:
        with _post(url, {}) as response:
            return int(response.status) == 200
    except OSError:
        return False


# --------------------------------------------------------------------------- metrics


def percentile(values: list[float], q: float) -> float:
    """numpy.percentile's default (linear interpolation); 0 for no values, as the real
    tool's `np.percentile(values or 0, q)`."""
    if not values:
        return 0.0
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else 0.0


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def _std(values: list[float]) -> float:
    return statistics.pstdev(values) if values else 0.0


def calculate_metrics(
    outputs: list[RequestOutput], duration_s: float
) -> tuple[BenchmarkMetrics, list[int]]:
    """The numbers of the result block, computed as 0.4.3 computes them."""
    output_lens: list[int] = []
    retokenized: list[int] = []
    total_input = completed = 0
    itls: list[float] = []
    tpots: list[float] = []
    ttfts: list[float] = []
    e2e: list[float] = []
    for out in outputs:
        if not out.success:
            output_lens.append(0)
            retokenized.append(0)
            continue
        output_lens.append(out.output_len)
        retokenized.append(len(encode(out.generated_text)))
        total_input += out.prompt_len
        if out.output_len > 1:
            tpots.append((out.latency - out.ttft) / (out.output_len - 1))
        itls += out.itl
        ttfts.append(out.ttft)
        e2e.append(out.latency)
        completed += 1
    nan = float("nan")
    total_output = sum(output_lens)
    metrics = BenchmarkMetrics(
        completed=completed,
        total_input=total_input,
        total_output=total_output,
        total_output_retokenized=sum(retokenized),
        request_throughput=completed / duration_s,
        input_throughput=total_input / duration_s,
        output_throughput=total_output / duration_s,
        total_throughput=(total_input + total_output) / duration_s,
        mean_ttft_ms=_mean(ttfts) * 1000,
        median_ttft_ms=_median(ttfts) * 1000,
        std_ttft_ms=_std(ttfts) * 1000,
        p99_ttft_ms=percentile(ttfts, 99) * 1000,
        mean_tpot_ms=_mean(tpots) * 1000,
        median_tpot_ms=_median(tpots) * 1000,
        std_tpot_ms=_std(tpots) * 1000,
        p99_tpot_ms=percentile(tpots, 99) * 1000,
        mean_itl_ms=_mean(itls) * 1000,
        median_itl_ms=_median(itls) * 1000,
        std_itl_ms=_std(itls) * 1000,
        p99_itl_ms=percentile(itls, 99) * 1000,
        # the real tool's np.mean([]) of no successful request is nan
        mean_e2e_latency_ms=statistics.fmean(e2e) * 1000 if e2e else nan,
        median_e2e_latency_ms=statistics.median(e2e) * 1000 if e2e else nan,
        std_e2e_latency_ms=_std(e2e) * 1000 if e2e else nan,
        p99_e2e_latency_ms=percentile(e2e, 99) * 1000 if e2e else nan,
        concurrency=sum(e2e) / duration_s,
    )
    return metrics, output_lens


def format_result(
    backend: str,
    request_rate: float,
    max_concurrency: int | None,
    duration_s: float,
    metrics: BenchmarkMetrics,
) -> str:
    """The result block, line for line as SGLang 0.4.3 prints it."""
    lines = ["", "{s:{c}^{n}}".format(s=" Serving Benchmark Result ", n=50, c="=")]

    def row(label: str, value: object, spec: str = "") -> None:
        lines.append(("{:<40} {:<10" + spec + "}").format(label, value))

    def section(title: str) -> None:
        lines.append("{s:{c}^{n}}".format(s=title, n=50, c="-"))

    row("Backend:", backend)
    row("Traffic request rate:", request_rate)
    row("Max reqeuest concurrency:", max_concurrency if max_concurrency else "not set")
    row("Successful requests:", metrics.completed)
    row("Benchmark duration (s):", duration_s, ".2f")
    row("Total input tokens:", metrics.total_input)
    row("Total generated tokens:", metrics.total_output)
    row("Total generated tokens (retokenized):", metrics.total_output_retokenized)
    row("Request throughput (req/s):", metrics.request_throughput, ".2f")
    row("Input token throughput (tok/s):", metrics.input_throughput, ".2f")
    row("Output token throughput (tok/s):", metrics.output_throughput, ".2f")
    row("Total token throughput (tok/s):", metrics.total_throughput, ".2f")
    row("Concurrency:", metrics.concurrency, ".2f")
    section("End-to-End Latency")
    row("Mean E2E Latency (ms):", metrics.mean_e2e_latency_ms, ".2f")
    row("Median E2E Latency (ms):", metrics.median_e2e_latency_ms, ".2f")
    section("Time to First Token")
    row("Mean TTFT (ms):", metrics.mean_ttft_ms, ".2f")
    row("Median TTFT (ms):", metrics.median_ttft_ms, ".2f")
    row("P99 TTFT (ms):", metrics.p99_ttft_ms, ".2f")
    section("Time per Output Token (excl. 1st token)")
    row("Mean TPOT (ms):", metrics.mean_tpot_ms, ".2f")
    row("Median TPOT (ms):", metrics.median_tpot_ms, ".2f")
    row("P99 TPOT (ms):", metrics.p99_tpot_ms, ".2f")
    section("Inter-token Latency")
    row("Mean ITL (ms):", metrics.mean_itl_ms, ".2f")
    row("Median ITL (ms):", metrics.median_itl_ms, ".2f")
    row("P99 ITL (ms):", metrics.p99_itl_ms, ".2f")
    lines.append("=" * 50)
    return "\n".join(lines)


# --------------------------------------------------------------------------- benchmark


def run_requests(
    func: RequestFunc,
    inputs: list[RequestInput],
    *,
    request_rate: float,
    max_concurrency: int | None,
    rng: random.Random,
    stream: bool,
    ignore_eos: bool,
) -> list[RequestOutput]:
    """Every request on its own thread (at most max_concurrency at once), started all at
    once or with exponential gaps of mean 1/request_rate; outputs in input order."""
    workers = max(1, min(len(inputs), max_concurrency or MAX_THREADS, MAX_THREADS))
    gate = threading.Semaphore(max_concurrency) if max_concurrency else None

    def one(req: RequestInput) -> RequestOutput:
        if gate is None:
            return func(req, stream=stream, ignore_eos=ignore_eos)
        with gate:
            return func(req, stream=stream, ignore_eos=ignore_eos)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bench") as pool:
        futures = []
        for req in inputs:
            futures.append(pool.submit(one, req))
            if not math.isinf(request_rate):
                time.sleep(rng.expovariate(request_rate))
        return [f.result() for f in futures]


def result_record(args: argparse.Namespace, duration_s: float, m: BenchmarkMetrics) -> dict:
    return {
        "backend": args.backend,
        "dataset_name": args.dataset_name,
        "request_rate": args.request_rate,
        "max_concurrency": args.max_concurrency,
        "sharegpt_output_len": args.sharegpt_output_len,
        "random_input_len": args.random_input_len,
        "random_output_len": args.random_output_len,
        "random_range_ratio": args.random_range_ratio,
        "duration": duration_s,
        "completed": m.completed,
        "total_input_tokens": m.total_input,
        "total_output_tokens": m.total_output,
        "total_output_tokens_retokenized": m.total_output_retokenized,
        "request_throughput": m.request_throughput,
        "input_throughput": m.input_throughput,
        "output_throughput": m.output_throughput,
        "mean_e2e_latency_ms": m.mean_e2e_latency_ms,
        "median_e2e_latency_ms": m.median_e2e_latency_ms,
        "std_e2e_latency_ms": m.std_e2e_latency_ms,
        "p99_e2e_latency_ms": m.p99_e2e_latency_ms,
        "mean_ttft_ms": m.mean_ttft_ms,
        "median_ttft_ms": m.median_ttft_ms,
        "std_ttft_ms": m.std_ttft_ms,
        "p99_ttft_ms": m.p99_ttft_ms,
        "mean_tpot_ms": m.mean_tpot_ms,
        "median_tpot_ms": m.median_tpot_ms,
        "std_tpot_ms": m.std_tpot_ms,
        "p99_tpot_ms": m.p99_tpot_ms,
        "mean_itl_ms": m.mean_itl_ms,
        "median_itl_ms": m.median_itl_ms,
        "std_itl_ms": m.std_itl_ms,
        "p99_itl_ms": m.p99_itl_ms,
        "concurrency": m.concurrency,
        "lab_standin": True,
    }


def output_file_name(args: argparse.Namespace) -> str:
    if args.output_file:
        return str(args.output_file)
    now = datetime.now().strftime("%m%d")
    if args.dataset_name == "random":
        return (
            f"{args.backend}_{now}_{args.num_prompts}_{args.random_input_len}_"
            f"{args.random_output_len}.jsonl"
        )
    return f"{args.backend}_{now}_{args.num_prompts}_sharegpt.jsonl"


def fetch_model_id(base_url: str) -> str | None:
    url = f"{base_url}/v1/models"
    request = urllib.request.Request(url, headers=_auth_headers())
    with urllib.request.urlopen(request, timeout=30) as response:
        models = json.loads(response.read()).get("data", [])
    return str(models[0]["id"]) if models else None


def run_benchmark(args: argparse.Namespace) -> int:
    """The whole tool after argument parsing; returns the exit status."""
    rng = random.Random(args.seed)
    extra = json.loads(args.extra_request_body) if args.extra_request_body else {}
    if args.port is None:
        args.port = DEFAULT_PORTS.get(args.backend, 30000)
    base_url = args.base_url or f"http://{args.host}:{args.port}"
    native = args.backend in ("sglang", "sglang-native")
    api_url = f"{base_url}/generate" if native else f"{base_url}/v1/completions"
    if args.model is None:
        try:
            args.model = fetch_model_id(base_url)
        except (OSError, ValueError) as exc:
            print(f"Failed to fetch model from {base_url}/v1/models. Error: {exc}")
            print("Please specify the correct host and port using `--host` and `--port`.")
            return 1
    if args.model is None:
        print("No model specified or found. Please provide a model using `--model`.")
        return 1
    print(f"{args}\n")
    try:
        conversations = sharegpt_conversations(args.dataset_path)
    except DatasetUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.dataset_name == "random":
        rows = sample_random_requests(
            args.random_input_len,
            args.random_output_len,
            args.num_prompts,
            args.random_range_ratio,
            conversations,
            rng,
        )
    else:
        rows = sample_sharegpt_requests(
            conversations, args.num_prompts, args.sharegpt_output_len, rng
        )
    if not rows:
        print("error: the dataset gave no request", file=sys.stderr)
        return 1
    inputs = [
        RequestInput(r.prompt, api_url, r.prompt_len, r.output_len, args.model, extra) for r in rows
    ]
    func = REQUEST_FUNCS[args.backend]
    stream, ignore_eos = not args.disable_stream, not args.disable_ignore_eos
    print("Starting initial single prompt test run...")
    test = func(inputs[0], stream=stream, ignore_eos=ignore_eos)
    if not test.success:
        print(
            "ValueError: Initial test run failed - Please make sure benchmark arguments "
            f"are correctly specified. Error: {test.error}",
            file=sys.stderr,
        )
        return 1
    print("Initial test run completed. Starting main benchmark run...")
    if native:
        _post_quietly(f"{base_url}/flush_cache")
    if args.profile:
        print("Starting profiler...")
        if _post_quietly(f"{base_url}/start_profile"):
            print("Profiler started")
    started = time.perf_counter()
    outputs = run_requests(
        func,
        inputs,
        request_rate=args.request_rate,
        max_concurrency=args.max_concurrency,
        rng=rng,
        stream=stream,
        ignore_eos=ignore_eos,
    )
    if args.profile:
        print("Stopping profiler...")
        if _post_quietly(f"{base_url}/stop_profile"):
            print("Profiler stopped")
    duration = time.perf_counter() - started
    metrics, _output_lens = calculate_metrics(outputs, duration)
    if metrics.completed == 0:
        first_error = next((o.error for o in outputs if o.error), "")
        print(
            "UserWarning: All requests failed. This is likely due to a misconfiguration "
            f"on the benchmark arguments. First error: {first_error}",
            file=sys.stderr,
        )
    print(format_result(args.backend, args.request_rate, args.max_concurrency, duration, metrics))
    with open(output_file_name(args), "a", encoding="utf-8") as fh:
        fh.write(json.dumps(result_record(args, duration, metrics)) + "\n")
    sys.stdout.flush()
    return 0


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    sys.exit(run_benchmark(args))


if __name__ == "__main__":
    main()

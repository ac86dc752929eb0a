"""Parsers for SGLang's benchmark output: `bench_one_batch` (the fork's and upstream's
console formats, and its JSONL record) and `bench_serving`'s result block.

SGLang prints these for humans and changes them between versions (REFERENCE §2), so
each parser keys on the stable parts (labels, units) and tolerates the rest: log lines
in between, a missing TPOT section, extra percentiles, the old `reqeuest` typo.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import XpufleetError

_NUM = r"([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?inf|nan)"


class BenchOutputError(XpufleetError):
    """A benchmark's output does not contain what a finished run prints."""


# --------------------------------------------------------------------------- one batch


@dataclass(frozen=True)
class Timing:
    """One latency with the throughput SGLang derived from it."""

    latency_s: float
    throughput: float  # token/s


@dataclass(frozen=True)
class DecodeStep:
    """One printed decode step (SGLang prints only the first few)."""

    index: int
    latency_s: float
    throughput: float
    batch_size: int | None = None  # printed by upstream's format only


@dataclass(frozen=True)
class OneBatchRun:
    """One (batch size, input, output) run: prefill, decode steps, median, total."""

    phase: str  # "warmup" or "benchmark"
    prefill: Timing
    decode_steps: tuple[DecodeStep, ...] = ()
    decode_median: Timing | None = None
    total: Timing | None = None


@dataclass(frozen=True)
class SkippedRun:
    """`skipping (bs, in, out) due to max batch size limit`: a sweep slot with no numbers."""

    phase: str
    batch_size: int
    input_len: int
    output_len: int


@dataclass(frozen=True)
class OneBatchOutput:
    """Everything bench_one_batch printed, in order."""

    style: str  # "fork" (`Decode.  latency:`), "upstream" (`Decode N. Batch size:`), "unknown"
    max_total_num_tokens: int | None
    slots: tuple[OneBatchRun | SkippedRun, ...]

    @property
    def runs(self) -> list[OneBatchRun]:
        return [s for s in self.slots if isinstance(s, OneBatchRun)]

    def benchmark_slots(self) -> list[OneBatchRun | SkippedRun]:
        """The timed slots, in the order of the sweep (warm-up left out)."""
        return [s for s in self.slots if s.phase == "benchmark"]


_MAX_TOKENS = re.compile(r"max_total_num_tokens\s*=\s*(\d+)")
_PHASE = re.compile(r"^\s*(Warmup|Benchmark)\s*\.\.\.\s*$")
_PREFILL = re.compile(rf"Prefill\.\s+latency:\s*{_NUM}\s*s,\s*throughput:\s*{_NUM}\s*token/s")
_DECODE_FORK = re.compile(rf"Decode\.\s+latency:\s*{_NUM}\s*s,\s*throughput:\s*{_NUM}\s*token/s")
_DECODE_UPSTREAM = re.compile(
    rf"Decode\s+(\d+)\.\s+Batch size:\s*(\d+),\s*latency:\s*{_NUM}\s*s,"
    rf"\s*throughput:\s*{_NUM}\s*token/s"
)
_DECODE_MEDIAN = re.compile(
    rf"Decode\.\s+median latency:\s*{_NUM}\s*s,\s*median throughput:\s*{_NUM}\s*token/s"
)
_TOTAL = re.compile(rf"Total\.\s+latency:\s*{_NUM}\s*s,\s*throughput:\s*{_NUM}\s*token/s")
_SKIPPING = re.compile(r"skipping \((\d+),\s*(\d+),\s*(\d+)\) due to max batch size limit")


def parse_one_batch(text: str) -> OneBatchOutput:
    """Parse bench_one_batch's console output (rank 0), either format.

    A run starts at its `Prefill.` line; the `Warmup ...` / `Benchmark ...` line before
    it says which phase it belongs to (none printed: benchmark). Raises
    BenchOutputError when no run was printed at all (the tool failed before timing).
    """
    phase = "benchmark"
    max_tokens: int | None = None
    slots: list[OneBatchRun | SkippedRun] = []
    styles: set[str] = set()
    current: dict[str, Any] | None = None

    def close() -> None:
        nonlocal current
        if current is not None:
            slots.append(
                OneBatchRun(
                    phase=current["phase"],
                    prefill=current["prefill"],
                    decode_steps=tuple(current["steps"]),
                    decode_median=current["median"],
                    total=current["total"],
                )
            )
            current = None

    for line in text.splitlines():
        if m := _MAX_TOKENS.search(line):
            max_tokens = int(m.group(1))
        elif m := _PHASE.match(line):
            close()
            phase = "warmup" if m.group(1) == "Warmup" else "benchmark"
        elif m := _SKIPPING.search(line):
            close()
            bs, il, ol = (int(g) for g in m.groups())
            slots.append(SkippedRun(phase, bs, il, ol))
        elif m := _PREFILL.search(line):
            close()
            current = {
                "phase": phase,
                "prefill": Timing(_float(m.group(1)), _float(m.group(2))),
                "steps": [],
                "median": None,
                "total": None,
            }
        elif current is None:
            continue
        elif m := _DECODE_MEDIAN.search(line):
            current["median"] = Timing(_float(m.group(1)), _float(m.group(2)))
        elif m := _DECODE_UPSTREAM.search(line):
            styles.add("upstream")
            current["steps"].append(
                DecodeStep(
                    index=int(m.group(1)),
                    batch_size=int(m.group(2)),
                    latency_s=_float(m.group(3)),
                    throughput=_float(m.group(4)),
                )
            )
        elif m := _DECODE_FORK.search(line):
            styles.add("fork")
            steps = current["steps"]
            steps.append(DecodeStep(len(steps), _float(m.group(1)), _float(m.group(2))))
        elif m := _TOTAL.search(line):
            current["total"] = Timing(_float(m.group(1)), _float(m.group(2)))
            close()
    close()
    if not slots:
        raise BenchOutputError("bench_one_batch printed no `Prefill.` line: no run finished")
    style = styles.pop() if len(styles) == 1 else ("mixed" if styles else "unknown")
    return OneBatchOutput(style=style, max_total_num_tokens=max_tokens, slots=tuple(slots))


@dataclass(frozen=True)
class OneBatchRecord:
    """One line of bench_one_batch's JSONL result file (`--result-filename`)."""

    run_name: str
    batch_size: int
    input_len: int
    output_len: int
    prefill_latency: float
    prefill_throughput: float
    median_decode_latency: float | None
    median_decode_throughput: float | None
    total_latency: float
    overall_throughput: float


def parse_one_batch_jsonl(text: str) -> list[OneBatchRecord]:
    """Parse the JSONL records; the median fields are absent when output_len is 1."""
    records: list[OneBatchRecord] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
            records.append(
                OneBatchRecord(
                    run_name=str(doc.get("run_name", "")),
                    batch_size=int(doc["batch_size"]),
                    input_len=int(doc["input_len"]),
                    output_len=int(doc["output_len"]),
                    prefill_latency=float(doc["prefill_latency"]),
                    prefill_throughput=float(doc["prefill_throughput"]),
                    median_decode_latency=_opt_float(doc.get("median_decode_latency")),
                    median_decode_throughput=_opt_float(doc.get("median_decode_throughput")),
                    total_latency=float(doc["total_latency"]),
                    overall_throughput=float(doc["overall_throughput"]),
                )
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BenchOutputError(f"bench_one_batch JSONL line {number}: {exc!r}") from exc
    return records


# --------------------------------------------------------------------------- serving


@dataclass(frozen=True)
class LatencyStats:
    """Mean/median/std/max and percentiles of one latency (ms) of bench_serving."""

    mean: float | None = None
    median: float | None = None
    std: float | None = None
    max: float | None = None
    percentiles: dict[int, float] = field(default_factory=dict)

    def p(self, percentile: int) -> float | None:
        return self.percentiles.get(percentile)


@dataclass(frozen=True)
class ServingResult:
    """bench_serving's `Serving Benchmark Result` block, typed; labels this version of
    the parser does not know are kept verbatim in `extra`."""

    backend: str | None = None
    request_rate: float | None = None  # inf = all requests at once
    max_concurrency: int | None = None  # None = "not set"
    successful_requests: int | None = None
    duration_s: float | None = None
    total_input_tokens: int | None = None
    total_generated_tokens: int | None = None
    total_generated_tokens_retokenized: int | None = None
    request_throughput: float | None = None  # req/s
    input_throughput: float | None = None  # tok/s
    output_throughput: float | None = None  # tok/s
    peak_output_throughput: float | None = None  # tok/s
    peak_concurrent_requests: int | None = None
    total_throughput: float | None = None  # tok/s
    concurrency: float | None = None
    e2e_latency_ms: LatencyStats | None = None
    ttft_ms: LatencyStats | None = None
    tpot_ms: LatencyStats | None = None
    itl_ms: LatencyStats | None = None
    complete: bool = True  # the closing `=====` line was seen
    extra: dict[str, str] = field(default_factory=dict)


#: normalized label -> (field, type)
_SERVING_FIELDS: dict[str, tuple[str, type]] = {
    "backend": ("backend", str),
    "traffic request rate": ("request_rate", float),
    "max request concurrency": ("max_concurrency", int),
    "successful requests": ("successful_requests", int),
    "benchmark duration (s)": ("duration_s", float),
    "total input tokens": ("total_input_tokens", int),
    "total generated tokens": ("total_generated_tokens", int),
    "total generated tokens (retokenized)": ("total_generated_tokens_retokenized", int),
    "request throughput (req/s)": ("request_throughput", float),
    "input token throughput (tok/s)": ("input_throughput", float),
    "output token throughput (tok/s)": ("output_throughput", float),
    "peak output token throughput (tok/s)": ("peak_output_throughput", float),
    "peak concurrent requests": ("peak_concurrent_requests", int),
    "total token throughput (tok/s)": ("total_throughput", float),
    "concurrency": ("concurrency", float),
}
_LATENCY_FIELDS = {"e2e latency": "e2e_latency_ms", "ttft": "ttft_ms", "tpot": "tpot_ms"}
_LATENCY_FIELDS["itl"] = "itl_ms"

_SERVING_HEADER = re.compile(r"=+\s*Serving Benchmark Result\s*=+")
_SERVING_FOOTER = re.compile(r"^\s*={10,}\s*$")
_SECTION = re.compile(r"^\s*-{3,}.*-{3,}\s*$")
_LABELLED = re.compile(r"^\s*(?P<label>[^:]+?):\s*(?P<value>.*?)\s*$")
_LATENCY_LABEL = re.compile(
    r"^(?P<stat>mean|median|std|max|p(?P<pct>\d+(?:\.\d+)?))\s+(?P<what>.+?)\s*\(ms\)$"
)
#: typos real SGLang versions printed (0.4.x: "Max reqeuest concurrency")
_LABEL_TYPOS = {"reqeuest": "request"}


def _normalize_label(label: str) -> str:
    words = label.strip().lower().split()
    return " ".join(_LABEL_TYPOS.get(w, w) for w in words)


def parse_serving(text: str) -> ServingResult:
    """Parse the last `Serving Benchmark Result` block of bench_serving's output.

    Raises BenchOutputError when there is no block, or it has no successful requests
    line (bench_serving died before it finished).
    """
    blocks = _serving_blocks(text)
    if not blocks:
        raise BenchOutputError("bench_serving printed no 'Serving Benchmark Result' block")
    lines, complete = blocks[-1]
    values: dict[str, Any] = {}
    stats: dict[str, dict[str, Any]] = {}
    extra: dict[str, str] = {}
    for line in lines:
        if _SECTION.match(line):
            continue
        m = _LABELLED.match(line)
        if not m:
            continue
        label, raw = _normalize_label(m.group("label")), m.group("value")
        if label in _SERVING_FIELDS:
            name, typ = _SERVING_FIELDS[label]
            try:
                values[name] = _typed(raw, typ)
            except ValueError:
                extra[m.group("label").strip()] = raw
            continue
        lat = _LATENCY_LABEL.match(label)
        if lat and lat.group("what") in _LATENCY_FIELDS:
            target = stats.setdefault(_LATENCY_FIELDS[lat.group("what")], {"percentiles": {}})
            try:
                number = _float(raw)
            except ValueError:
                extra[m.group("label").strip()] = raw
                continue
            if lat.group("pct"):
                target["percentiles"][int(float(lat.group("pct")))] = number
            else:
                target[lat.group("stat")] = number
            continue
        extra[m.group("label").strip()] = raw
    if "successful_requests" not in values:
        raise BenchOutputError("bench_serving result block has no 'Successful requests' line")
    for name, fields_ in stats.items():
        values[name] = LatencyStats(**fields_)
    return ServingResult(complete=complete, extra=extra, **values)


#: bench_serving's JSONL record (`--output-file`, one line appended per run; sglang
#: 0.4.3.post2 python/sglang/bench_serving.py, `result` in benchmark()): key -> type
SERVING_RECORD_KEYS: dict[str, type] = {
    "backend": str,
    "dataset_name": str,
    "duration": float,
    "completed": int,
    "total_input_tokens": int,
    "total_output_tokens": int,
    "total_output_tokens_retokenized": int,
    "request_throughput": float,
    "input_throughput": float,
    "output_throughput": float,
    "concurrency": float,
    **{
        f"{stat}_{what}_ms": float
        for what in ("e2e_latency", "ttft", "tpot", "itl")
        for stat in ("mean", "median", "std", "p99")
    },
}


def parse_serving_jsonl(text: str) -> list[dict[str, Any]]:
    """Parse bench_serving's JSONL records: every known key typed, the others kept.

    A record without `completed` or `duration`, or with a value of the wrong type, is
    not what a finished run writes: BenchOutputError naming the line."""
    records: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
            if not isinstance(doc, dict):
                raise TypeError(f"a JSON object expected, got {type(doc).__name__}")
            for key in ("completed", "duration"):
                if key not in doc:
                    raise KeyError(key)
            record = dict(doc)
            for key, typ in SERVING_RECORD_KEYS.items():
                if doc.get(key) is not None:
                    record[key] = typ(doc[key])
            records.append(record)
        except (ValueError, KeyError, TypeError) as exc:
            raise BenchOutputError(f"bench_serving JSONL line {number}: {exc!r}") from exc
    return records


def _serving_blocks(text: str) -> list[tuple[list[str], bool]]:
    """Lines of every result block, and whether its closing `=====` line was printed."""
    blocks: list[tuple[list[str], bool]] = []
    current: list[str] | None = None
    for line in text.splitlines():
        if _SERVING_HEADER.search(line):
            if current is not None:
                blocks.append((current, False))
            current = []
        elif current is not None:
            if _SERVING_FOOTER.match(line):
                blocks.append((current, True))
                current = None
            else:
                current.append(line)
    if current is not None:
        blocks.append((current, False))
    return blocks


# --------------------------------------------------------------------------- helpers


def _float(raw: str) -> float:
    return float(raw.strip())


def _opt_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def _typed(raw: str, typ: type) -> Any:
    """A value of a result line: 'not set' -> None, 'inf' -> inf, ints and floats typed."""
    value = raw.strip()
    if typ is str:
        return value
    if value.lower() in ("not set", "none", "n/a", ""):
        return None
    if typ is int:
        number = float(value)
        return int(number) if math.isfinite(number) and number == int(number) else number
    return float(value)

"""Bench runs: parsed output -> rows -> runs/<id>/bench.{csv,json,png}, and compare.

bench.json keeps the plan, the versions and the wheel hashes that produced the numbers,
so a later `invoke bench --compare A B` can say what changed between two runs, not only
by how much.
"""

from __future__ import annotations

import csv
import json
import math
import textwrap
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from ..errors import InputError
from .configs import ONE_BATCH, SERVING, BenchConfig
from .parsers import OneBatchOutput, OneBatchRecord, OneBatchRun, ServingResult, SkippedRun

SCHEMA_VERSION = 1
CSV_NAME, JSON_NAME, PLOT_NAME = "bench.csv", "bench.json", "bench.png"
ROW_OK, ROW_FAILED, ROW_SKIPPED = "ok", "failed", "skipped"

#: metric -> unit, in table order; bench_one_batch's names are those of its JSONL record
METRIC_UNITS: dict[str, str] = {
    "prefill_latency": "s",
    "prefill_throughput": "tok/s",
    "median_decode_latency": "s",
    "median_decode_throughput": "tok/s",
    "total_latency": "s",
    "overall_throughput": "tok/s",
    "successful_requests": "req",
    "duration": "s",
    "request_throughput": "req/s",
    "input_throughput": "tok/s",
    "output_throughput": "tok/s",
    "total_throughput": "tok/s",
    "mean_e2e_latency": "ms",
    "median_e2e_latency": "ms",
    "mean_ttft": "ms",
    "median_ttft": "ms",
    "p99_ttft": "ms",
    "mean_tpot": "ms",
    "median_tpot": "ms",
    "p99_tpot": "ms",
    "mean_itl": "ms",
    "median_itl": "ms",
    "p99_itl": "ms",
}
LOWER_IS_BETTER = frozenset(m for m, unit in METRIC_UNITS.items() if unit in ("s", "ms"))
CONFIG_COLUMNS = ("name", "kind", "batch_size", "input_len", "output_len", "tp", "profile")
ROW_COLUMNS = ("node", "status", "message")


@dataclass
class BenchRow:
    """One config's outcome on one run; metrics are finite numbers only."""

    config: BenchConfig
    kind: str
    node: str
    status: str = ROW_OK
    metrics: dict[str, float] = field(default_factory=dict)
    message: str = ""

    @property
    def latency_s(self) -> float | None:
        """The headline latency: a whole batch (one_batch) or a median request (serving)."""
        if self.kind == SERVING:
            ms = self.metrics.get("median_e2e_latency")
            return None if ms is None else ms / 1000.0
        return self.metrics.get("total_latency")

    @property
    def throughput(self) -> float | None:
        """The headline throughput in tokens/s (input + output)."""
        key = "total_throughput" if self.kind == SERVING else "overall_throughput"
        return self.metrics.get(key)

    def to_json(self) -> dict[str, Any]:
        return {
            "config": self.config.to_json(),
            "kind": self.kind,
            "node": self.node,
            "status": self.status,
            "message": self.message,
            "metrics": dict(self.metrics),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> BenchRow:
        return cls(
            config=BenchConfig(**doc["config"]),
            kind=doc["kind"],
            node=doc.get("node", ""),
            status=doc.get("status", ROW_OK),
            metrics={k: float(v) for k, v in (doc.get("metrics") or {}).items() if v is not None},
            message=doc.get("message", ""),
        )


def _finite(values: dict[str, float | int | None]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if v is not None and math.isfinite(float(v))}


# --------------------------------------------------------------------------- parsed -> rows


def one_batch_metrics(run: OneBatchRun) -> dict[str, float]:
    return _finite(
        {
            "prefill_latency": run.prefill.latency_s,
            "prefill_throughput": run.prefill.throughput,
            "median_decode_latency": run.decode_median.latency_s if run.decode_median else None,
            "median_decode_throughput": run.decode_median.throughput if run.decode_median else None,
            "total_latency": run.total.latency_s if run.total else None,
            "overall_throughput": run.total.throughput if run.total else None,
        }
    )


def record_metrics(record: OneBatchRecord) -> dict[str, float]:
    return _finite(
        {
            "prefill_latency": record.prefill_latency,
            "prefill_throughput": record.prefill_throughput,
            "median_decode_latency": record.median_decode_latency,
            "median_decode_throughput": record.median_decode_throughput,
            "total_latency": record.total_latency,
            "overall_throughput": record.overall_throughput,
        }
    )


def rows_from_one_batch(
    configs: Sequence[BenchConfig],
    output: OneBatchOutput,
    *,
    node: str,
    records: Sequence[OneBatchRecord] = (),
) -> list[BenchRow]:
    """One row per config of one bench_one_batch invocation (configs in sweep order).

    The JSONL records name their (batch, input, output), so they are used when present;
    otherwise the console's timed slots are matched to the configs in sweep order.
    """
    by_point = {(r.batch_size, r.input_len, r.output_len): r for r in records}
    slots = output.benchmark_slots()
    rows: list[BenchRow] = []
    for index, config in enumerate(configs):
        point = (config.batch_size, config.input_len, config.output_len)
        slot = slots[index] if index < len(slots) else None
        if point in by_point:
            rows.append(BenchRow(config, ONE_BATCH, node, metrics=record_metrics(by_point[point])))
        elif isinstance(slot, SkippedRun):
            message = "skipped by bench_one_batch: batch exceeds max_total_num_tokens"
            if output.max_total_num_tokens is not None:
                message += f" ({output.max_total_num_tokens})"
            rows.append(BenchRow(config, ONE_BATCH, node, ROW_SKIPPED, message=message))
        elif isinstance(slot, OneBatchRun) and slot.total is not None:
            rows.append(BenchRow(config, ONE_BATCH, node, metrics=one_batch_metrics(slot)))
        else:
            message = "bench_one_batch printed no complete result for this config"
            rows.append(BenchRow(config, ONE_BATCH, node, ROW_FAILED, message=message))
    return rows


def row_from_serving(
    config: BenchConfig,
    result: ServingResult,
    *,
    node: str,
    record: dict[str, Any] | None = None,
) -> BenchRow:
    """One bench_serving run as a row: the printed block's numbers (two decimals), or
    the JSONL record's full-precision ones when the tool wrote it (`record`)."""
    values: dict[str, float | int | None] = {
        "successful_requests": result.successful_requests,
        "duration": result.duration_s,
        "request_throughput": result.request_throughput,
        "input_throughput": result.input_throughput,
        "output_throughput": result.output_throughput,
        "total_throughput": result.total_throughput,
    }
    for prefix, stats in (
        ("e2e_latency", result.e2e_latency_ms),
        ("ttft", result.ttft_ms),
        ("tpot", result.tpot_ms),
        ("itl", result.itl_ms),
    ):
        if stats is not None:
            values[f"mean_{prefix}"] = stats.mean
            values[f"median_{prefix}"] = stats.median
            values[f"p99_{prefix}"] = stats.p(99)
    if record is not None and record.get("completed") == result.successful_requests:
        values.update(_record_values(record))
    metrics = {k: v for k, v in _finite(values).items() if k in METRIC_UNITS}
    status, message = ROW_OK, ""
    if not result.successful_requests:
        status, message = ROW_FAILED, "bench_serving: no request succeeded"
    return BenchRow(config, SERVING, node, status, metrics, message)


def _record_values(record: dict[str, Any]) -> dict[str, float | int | None]:
    """Row metrics from a JSONL record; its total throughput is not written, but is
    (input + output tokens) / duration, as the printed line computes it."""
    values: dict[str, float | int | None] = {
        "successful_requests": record.get("completed"),
        "duration": record.get("duration"),
        "request_throughput": record.get("request_throughput"),
        "input_throughput": record.get("input_throughput"),
        "output_throughput": record.get("output_throughput"),
    }
    duration = record.get("duration")
    tokens = (record.get("total_input_tokens"), record.get("total_output_tokens"))
    if duration and None not in tokens:
        values["total_throughput"] = (tokens[0] + tokens[1]) / duration
    for prefix in ("e2e_latency", "ttft", "tpot", "itl"):
        for stat in ("mean", "median", "p99"):
            key = f"{stat}_{prefix}_ms"
            if record.get(key) is not None:
                values[f"{stat}_{prefix}"] = record[key]
    return {k: v for k, v in values.items() if v is not None}


def failed_rows(
    configs: Iterable[BenchConfig], kind: str, node: str, message: str
) -> list[BenchRow]:
    return [BenchRow(c, kind, node, ROW_FAILED, message=message) for c in configs]


# --------------------------------------------------------------------------- a run on disk


@dataclass
class BenchRun:
    """A benchmark run as saved: rows plus what produced them."""

    run_id: str
    rows: list[BenchRow]
    plan: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    wheels: dict[str, Any] = field(default_factory=dict)
    #: None on real hardware; otherwise what was simulated (lab: SGLang stand-in on CPU)
    simulated: str | None = None
    created: str = ""
    source: Path | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "run_id": self.run_id,
            "created": self.created,
            "simulated": self.simulated,
            "plan": self.plan,
            "versions": self.versions,
            "wheels": self.wheels,
            "rows": [r.to_json() for r in self.rows],
        }


def new_run_id(runs_dir: Path, now: float | None = None) -> str:
    """`bench-YYYYmmdd-HHMMSS` (UTC), suffixed when that directory already exists."""
    base = "bench-" + time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    candidate, n = base, 1
    while (runs_dir / candidate).exists():
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def metric_columns(rows: Iterable[BenchRow]) -> list[str]:
    present = {m for r in rows for m in r.metrics}
    return [m for m in METRIC_UNITS if m in present] + sorted(present - set(METRIC_UNITS))


def write_csv(rows: Sequence[BenchRow], path: Path) -> None:
    metrics = metric_columns(rows)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow([*CONFIG_COLUMNS, *ROW_COLUMNS, *metrics])
        for row in rows:
            c = row.config
            writer.writerow(
                [c.name, row.kind, c.batch_size, c.input_len, c.output_len, c.tp, c.profile]
                + [row.node, row.status, row.message]
                + [repr(row.metrics[m]) if m in row.metrics else "" for m in metrics]
            )


def read_csv(path: Path) -> list[BenchRow]:
    rows: list[BenchRow] = []
    with path.open(newline="", encoding="utf-8") as fh:
        for record in csv.DictReader(fh):
            config = BenchConfig(
                name=record["name"],
                batch_size=int(record["batch_size"]),
                input_len=int(record["input_len"]),
                output_len=int(record["output_len"]),
                tp=int(record["tp"]),
                profile=record["profile"] == "True",
            )
            skip = set(CONFIG_COLUMNS) | set(ROW_COLUMNS)
            metrics = {k: float(v) for k, v in record.items() if k not in skip and v != ""}
            rows.append(
                BenchRow(
                    config,
                    record["kind"],
                    record["node"],
                    record["status"],
                    metrics,
                    record["message"],
                )
            )
    return rows


def write_run(run: BenchRun, run_dir: Path) -> dict[str, Path]:
    """Write bench.csv, bench.json and bench.png into run_dir; returns their paths."""
    run_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": run_dir / CSV_NAME, "json": run_dir / JSON_NAME, "plot": run_dir / PLOT_NAME}
    if not run.created:
        run.created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_csv(run.rows, paths["csv"])
    paths["json"].write_text(json.dumps(run.to_json(), indent=2) + "\n", encoding="utf-8")
    plot_run(run, paths["plot"])
    return paths


def resolve_run(ref: str, runs_dir: Path) -> Path:
    """A bench.json from a run id, a run directory or the file itself (bad input: exit 2)."""
    candidates = [Path(ref), runs_dir / ref]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
        if (candidate / JSON_NAME).is_file():
            return candidate / JSON_NAME
    raise InputError(
        f"no benchmark run {ref!r}: neither {ref}/{JSON_NAME} nor {runs_dir / ref / JSON_NAME} "
        "exists",
        key="compare",
    )


def read_run(path: Path) -> BenchRun:
    """Load a bench.json (or a run directory holding one)."""
    if path.is_dir():
        path = path / JSON_NAME
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        rows = [BenchRow.from_json(r) for r in doc["rows"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"not a readable benchmark result: {exc}", file=str(path)) from exc
    return BenchRun(
        run_id=doc.get("run_id", path.parent.name),
        rows=rows,
        plan=doc.get("plan") or {},
        versions=doc.get("versions") or {},
        wheels=doc.get("wheels") or {},
        simulated=doc.get("simulated"),
        created=doc.get("created", ""),
        source=path,
    )


# --------------------------------------------------------------------------- plot


def plot_run(run: BenchRun, path: Path) -> None:
    """Latency and throughput per config as two bar charts in one PNG (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    measured = [r for r in run.rows if r.status == ROW_OK]
    names = [r.config.name for r in measured]
    fig, (ax_lat, ax_tput) = plt.subplots(1, 2, figsize=(11, 4.8), dpi=100)
    try:
        title = f"xpufleet bench {run.run_id}"
        if run.simulated:
            title += "\n" + textwrap.fill(f"SIMULATED: {run.simulated}", width=110)
        fig.suptitle(title, fontsize=10)
        for ax, values, label, colour in (
            (ax_lat, [r.latency_s for r in measured], "latency (s)", "tab:orange"),
            (ax_tput, [r.throughput for r in measured], "throughput (token/s)", "tab:blue"),
        ):
            heights = [v if v is not None else 0.0 for v in values]
            if names:
                bars = ax.bar(range(len(names)), heights, color=colour)
                ax.bar_label(bars, labels=[_short(v) for v in values], fontsize=8)
                ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
            else:
                ax.text(0.5, 0.5, "no successful run", ha="center", va="center")
            ax.set_ylabel(label)
            ax.set_title(label.split(" (")[0] + " per config", fontsize=9)
            ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)


def _short(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


# --------------------------------------------------------------------------- compare


@dataclass(frozen=True)
class MetricChange:
    metric: str
    a: float | None
    b: float | None

    @property
    def change_pct(self) -> float | None:
        """(B - A) / A in percent; None when either side is missing or A is zero."""
        if self.a is None or self.b is None or self.a == 0:
            return None
        return (self.b - self.a) / abs(self.a) * 100.0

    @property
    def better(self) -> bool | None:
        """Whether B improves on A (lower latency, higher throughput); None if unchanged."""
        pct = self.change_pct
        if pct is None or pct == 0:
            return None
        return pct < 0 if self.metric in LOWER_IS_BETTER else pct > 0


@dataclass(frozen=True)
class ComparedRow:
    name: str
    a: BenchRow | None
    b: BenchRow | None
    changes: tuple[MetricChange, ...]


def compare(a: BenchRun, b: BenchRun) -> list[ComparedRow]:
    """Configs of A then those only in B, each metric of either side with its change."""
    a_rows = {r.config.name: r for r in a.rows}
    b_rows = {r.config.name: r for r in b.rows}
    names = list(a_rows) + [n for n in b_rows if n not in a_rows]
    compared: list[ComparedRow] = []
    for name in names:
        ra, rb = a_rows.get(name), b_rows.get(name)
        metrics = metric_columns([r for r in (ra, rb) if r is not None])
        changes = tuple(
            MetricChange(
                m,
                ra.metrics.get(m) if ra else None,
                rb.metrics.get(m) if rb else None,
            )
            for m in metrics
        )
        compared.append(ComparedRow(name, ra, rb, changes))
    return compared


def version_changes(a: BenchRun, b: BenchRun) -> list[tuple[str, Any, Any]]:
    """(what, A, B) for every version or wheel hash that differs between the runs."""
    out: list[tuple[str, Any, Any]] = []
    for section, left, right in (
        ("version", a.versions, b.versions),
        ("wheel", a.wheels, b.wheels),
    ):
        for key in sorted(set(left) | set(right)):
            if left.get(key) != right.get(key):
                out.append((f"{section} {key}", _brief(left.get(key)), _brief(right.get(key))))
    return out


def _brief(value: Any) -> Any:
    """A wheel record as `version (sha256 prefix)`; anything else unchanged."""
    if isinstance(value, dict) and "sha256" in value:
        return f"{value.get('version', '?')} (sha256 {str(value['sha256'])[:12]})"
    return value


def format_pct(pct: float | None) -> str:
    return "n/a" if pct is None else f"{pct:+.1f}%"


def compare_table(a: BenchRun, b: BenchRun) -> Table:
    """A and B side by side, one line per config and metric, the change in percent."""
    table = Table(title=f"bench compare: A={a.run_id}  B={b.run_id}")
    for column in ("config", "metric", "unit", "A", "B", "change"):
        table.add_column(column, justify="right" if column in ("A", "B", "change") else "left")
    for row in compare(a, b):
        first = True
        status_note = _status_note(row)
        if status_note:
            table.add_row(row.name, Text(status_note, "yellow"), "", "", "", "")
            first = False
        for change in row.changes:
            style = {True: "green", False: "red", None: ""}[change.better]
            table.add_row(
                row.name if first else "",
                change.metric,
                METRIC_UNITS.get(change.metric, ""),
                _number(change.a),
                _number(change.b),
                Text(format_pct(change.change_pct), style),
            )
            first = False
    return table


def _status_note(row: ComparedRow) -> str:
    if row.a is None:
        return "only in B"
    if row.b is None:
        return "only in A"
    if row.a.status != ROW_OK or row.b.status != ROW_OK:
        return f"A {row.a.status}, B {row.b.status}"
    return ""


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.5g}" if abs(value) < 1e5 else f"{value:,.0f}"


def results_table(run: BenchRun) -> Table:
    """The rows of one run: headline latency and throughput per config."""
    title = f"bench {run.run_id}"
    if run.simulated:
        title += "  [SIMULATED]"
    table = Table(title=title)
    table.add_column("config", no_wrap=True)
    for column in ("bs", "in", "out", "tp", "status", "latency s", "tok/s"):
        table.add_column(column, justify="right" if column != "status" else "left")
    table.add_column("message", overflow="fold")
    for row in run.rows:
        c = row.config
        table.add_row(
            c.name,
            str(c.batch_size),
            str(c.input_len),
            str(c.output_len),
            str(c.tp),
            Text(row.status, {"ok": "green", "failed": "bold red"}.get(row.status, "yellow")),
            _number(row.latency_s),
            _number(row.throughput),
            row.message,
        )
    return table

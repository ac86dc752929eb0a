"""`python -m sglang.bench_one_batch`: static-batch latency of one node, in the fork's format.

The seed's fork (0.4.3.post2) prints on rank 0 `max_total_num_tokens=N`, `Benchmark ...`,
`Prefill. latency: ...`, up to five `Decode.  latency: ...` lines (two spaces after
`Decode.`), the decode median and `Total. latency: ...`, and appends one JSONL record per
run to --result-filename. It has no warm-up run (the fork commented it out), so the
first timed run includes start-up costs. Single node only, like the fork.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import signal
import statistics
import sys
import time
from multiprocessing.connection import Connection

import torch
import torch.distributed as dist

from .srt.engine import init_rank
from .srt.model import VOCAB_SIZE, TinyTPModel, decode, encode
from .srt.server_args import ServerArgs
from .srt.utils import configure_logger, free_port, kill_itself_when_parent_died

CORRECTNESS_PROMPTS = [
    "The capital of France is",
    "The capital of the United Kindom is",
    "Today is a sunny day and I like",
]


@dataclasses.dataclass
class BenchArgs:
    run_name: str = "default"
    batch_size: tuple[int, ...] = (1,)
    input_len: tuple[int, ...] = (1024,)
    output_len: tuple[int, ...] = (16,)
    result_filename: str = "result.jsonl"
    correctness_test: bool = False
    cut_len: int = 4
    profile: bool = False
    profile_filename_prefix: str = "profile"

    @staticmethod
    def add_cli_args(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--run-name", type=str, default=BenchArgs.run_name)
        parser.add_argument("--batch-size", type=int, nargs="+", default=BenchArgs.batch_size)
        parser.add_argument("--input-len", type=int, nargs="+", default=BenchArgs.input_len)
        parser.add_argument("--output-len", type=int, nargs="+", default=BenchArgs.output_len)
        parser.add_argument("--result-filename", type=str, default=BenchArgs.result_filename)
        parser.add_argument("--correctness-test", action="store_true")
        parser.add_argument("--cut-len", type=int, default=BenchArgs.cut_len)
        parser.add_argument("--profile", action="store_true")
        parser.add_argument(
            "--profile-filename-prefix", type=str, default=BenchArgs.profile_filename_prefix
        )

    @classmethod
    def from_cli_args(cls, args: argparse.Namespace) -> BenchArgs:
        names = [f.name for f in dataclasses.fields(cls)]
        values = {name: getattr(args, name) for name in names}
        for name in ("batch_size", "input_len", "output_len"):
            values[name] = tuple(values[name])
        return cls(**values)


def rank_print(tp_rank: int, *args: object) -> None:
    if tp_rank == 0:
        print(*args, flush=True)


def _synthetic_batch(batch_size: int, input_len: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(42)
    ids = torch.randint(0, VOCAB_SIZE - 1, (batch_size, input_len), generator=gen)
    return ids.tolist()


def latency_test_run_once(
    model: TinyTPModel,
    run_name: str,
    batch_size: int,
    input_len: int,
    output_len: int,
    tp_rank: int,
) -> dict[str, object]:
    """One timed prefill + decode, printed and returned as the fork's measurement record."""
    batch = _synthetic_batch(batch_size, input_len)
    tokens = torch.tensor(batch, dtype=torch.int64)
    tot_latency = 0.0
    tic = time.time()
    logits, cache = model.forward(tokens, None)
    prefill_latency = time.time() - tic
    tot_latency += prefill_latency
    throughput = input_len * batch_size / prefill_latency
    rank_print(
        tp_rank,
        f"Prefill. latency: {prefill_latency:6.5f} s, throughput: {throughput:9.2f} token/s",
    )
    decode_latencies = []
    for i in range(output_len - 1):
        tic = time.time()
        next_ids = logits.argmax(dim=-1)
        logits, cache = model.forward(next_ids.unsqueeze(1), cache)
        latency = time.time() - tic
        tot_latency += latency
        throughput = batch_size / latency
        decode_latencies.append(latency)
        if i < 5:
            rank_print(
                tp_rank,
                f"Decode.  latency: {latency:6.5f} s, throughput: {throughput:9.2f} token/s",
            )
    record: dict[str, object] = {
        "run_name": run_name,
        "batch_size": batch_size,
        "input_len": input_len,
        "output_len": output_len,
        "prefill_latency": prefill_latency,
        "prefill_throughput": input_len * batch_size / prefill_latency,
    }
    if output_len > 1:
        med_decode_latency = statistics.median(decode_latencies)
        med_decode_throughput = batch_size / med_decode_latency
        rank_print(
            tp_rank,
            f"Decode.  median latency: {med_decode_latency:6.5f} s, "
            f"median throughput: {med_decode_throughput:9.2f} token/s",
        )
        record["median_decode_latency"] = med_decode_latency
        record["median_decode_throughput"] = med_decode_throughput
    throughput = (input_len + output_len) * batch_size / tot_latency
    rank_print(
        tp_rank, f"Total. latency: {tot_latency:6.3f} s, throughput: {throughput:9.2f} token/s"
    )
    record["total_latency"] = tot_latency
    record["overall_throughput"] = throughput
    return record


def run_rank(
    server_args: ServerArgs, bench_args: BenchArgs, tp_rank: int, init_addr: str, done: Connection
) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    kill_itself_when_parent_died()
    configure_logger(server_args.log_level, prefix=f" TP{tp_rank}")
    model = init_rank(server_args, tp_rank, None, init_addr)
    rank_print(tp_rank, f"max_total_num_tokens={65536}")
    if bench_args.correctness_test:
        for prompt in CORRECTNESS_PROMPTS:
            ids = encode(prompt)[: max(1, len(encode(prompt)) - bench_args.cut_len)]
            out = model.generate([ids], max(bench_args.output_len))[0]
            rank_print(tp_rank, f"========== Prompt 0 ==========\n{decode(ids)}{decode(out)}\n")
        done.send(0)
        return
    records = []
    for batch_size in bench_args.batch_size:
        for input_len in bench_args.input_len:
            for output_len in bench_args.output_len:
                rank_print(tp_rank, "Benchmark ...")
                if bench_args.profile:
                    rank_print(tp_rank, "profiler: lab stand-in records no trace")
                records.append(
                    latency_test_run_once(
                        model, bench_args.run_name, batch_size, input_len, output_len, tp_rank
                    )
                )
    if tp_rank == 0 and bench_args.result_filename:
        with open(bench_args.result_filename, "a") as fout:
            for record in records:
                fout.write(json.dumps(record) + "\n")
    if server_args.tp_size > 1:
        dist.barrier()
        dist.destroy_process_group()
    done.send(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sglang.bench_one_batch")
    ServerArgs.add_cli_args(parser)
    BenchArgs.add_cli_args(parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    server_args = ServerArgs.from_cli_args(args)
    bench_args = BenchArgs.from_cli_args(args)
    configure_logger(server_args.log_level)
    init_addr = f"127.0.0.1:{free_port()}"
    ctx = multiprocessing.get_context("fork")
    workers = []
    for tp_rank in range(server_args.tp_size):
        reader, writer = ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=run_rank, args=(server_args, bench_args, tp_rank, init_addr, writer)
        )
        proc.start()
        writer.close()
        workers.append((proc, reader))
    code = 0
    for proc, reader in workers:
        try:
            reader.recv()
        except EOFError:
            code = 1
        proc.join()
        code = code or (proc.exitcode or 0)
    if code:
        for proc, _ in workers:
            if proc.is_alive() and proc.pid:
                os.kill(proc.pid, signal.SIGKILL)
    sys.exit(code)


if __name__ == "__main__":
    main()

"""Tensor-parallel ranks of the stand-in and the front end that feeds rank 0.

Every rank joins ONE torch.distributed group (gloo) at `tcp://--dist-init-addr`. Rank 0
takes requests from the node-0 front end and broadcasts them; all ranks run the model
in lockstep (its all_reduces need every rank). When idle, rank 0 broadcasts a no-op
every second, as SGLang's scheduler loop broadcasts its requests every iteration, so
the group never sits in one collective long enough to hit the process-group timeout,
and a rank that disappears is noticed by its peers.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

# The fork's scheduler process imports these at module top (cboss6/sglang@
# deepseek-xpu-distribute python/sglang/srt/managers/scheduler.py, lines 30-33)
import psutil  # noqa: F401
import setproctitle  # noqa: F401
import torch
import torch.distributed as dist
import zmq  # noqa: F401

from .model import TinyTPModel
from .server_args import ServerArgs
from .utils import (
    available_memory_gb,
    configure_logger,
    kill_itself_when_parent_died,
    lab_fault,
    set_process_name,
)

logger = logging.getLogger("sglang.srt.engine")

NOOP, GENERATE, SHUTDOWN = 0, 1, 2
IDLE_BROADCAST_S = 1.0
DEFAULT_CONTEXT_LEN = 4096


def context_length(args: ServerArgs) -> int:
    return args.context_length or DEFAULT_CONTEXT_LEN


def max_total_num_tokens(args: ServerArgs) -> int:
    return args.max_total_tokens or 65536


@dataclass
class PortArgs:
    """The stand-in's `PortArgs` (the fork's server_args.py: the zmq IPC names and the
    nccl port every scheduler is given): here the group's init address and, for rank 0,
    the pipe from the node-0 front end."""

    dist_init_addr: str
    requests: Connection | None = None


@dataclass
class GenerateRequest:
    batch: list[list[int]]
    max_new_tokens: int
    ignore_eos: bool = False


def _broadcast_header(
    cmd: int, batch: int = 0, length: int = 0, max_new: int = 0, ignore_eos: bool = False
) -> list[int]:
    header = torch.tensor([cmd, batch, length, max_new, int(ignore_eos)], dtype=torch.int64)
    dist.broadcast(header, src=0)
    return header.tolist()


def _all_reduce(tensor: torch.Tensor) -> None:
    dist.all_reduce(tensor)


def init_rank(args: ServerArgs, rank: int, gpu_id: int | None, init_addr: str) -> TinyTPModel:
    """Join the group and load this rank's shard, logging like SGLang's scheduler."""
    torch.set_num_threads(1)
    tic = time.perf_counter()
    # the fork's model_runner.py `init_torch_distributed`: this line, THEN set_device, so
    # the TP<n> prefix is in the log before the rank works on (and shows on) its device
    logger.info("Init torch distributed begin.")
    if gpu_id is not None:  # (the stand-in's bench_one_batch selects none)
        select_device(args, gpu_id)
    dist.init_process_group(
        backend="gloo",
        init_method=f"tcp://{init_addr}",
        rank=rank,
        world_size=args.tp_size,
    )
    mem = available_memory_gb()
    logger.info(
        f"Init torch distributed ends. elapsed={time.perf_counter() - tic:.2f} s, mem usage=0.00 GB"
    )
    logger.info(f"Load weight begin. avail mem={mem:.2f} GB")
    tic = time.perf_counter()
    model = TinyTPModel(rank, args.tp_size, _all_reduce if args.tp_size > 1 else None)
    shard_gb = model.parameter_count * 8 / (1 << 30)
    logger.info(
        f"Load weight end. elapsed={time.perf_counter() - tic:.2f} s, "
        f"type=XpufleetLabTinyForCausalLM, dtype=torch.int64, "
        f"avail mem={available_memory_gb():.2f} GB, mem usage={shard_gb:.2f} GB."
    )
    tokens = max_total_num_tokens(args)
    logger.info(f"KV Cache is allocated. #tokens: {tokens}, K size: 0.00 GB, V size: 0.00 GB")
    logger.info(f"Memory pool end. avail mem={available_memory_gb():.2f} GB")
    logger.info(
        f"max_total_num_tokens={tokens}, chunked_prefill_size={args.chunked_prefill_size or 8192}, "
        f"max_prefill_tokens={args.max_prefill_tokens}, "
        f"max_running_requests={args.max_running_requests or 2048}, "
        f"context_len={context_length(args)}"
    )
    return model


def _serve_rank0(model: TinyTPModel, args: ServerArgs, requests: Connection) -> None:
    while True:
        if not requests.poll(IDLE_BROADCAST_S):
            _broadcast_header(NOOP)
            continue
        try:
            request = requests.recv()
        except EOFError:
            _broadcast_header(SHUTDOWN)
            return
        batch = request.batch
        _broadcast_header(
            GENERATE, len(batch), len(batch[0]), request.max_new_tokens, request.ignore_eos
        )
        dist.broadcast(torch.tensor(batch, dtype=torch.int64), src=0)
        outputs = _generate_logged(model, args, batch, request.max_new_tokens, request.ignore_eos)
        requests.send(outputs)


def _serve_follower(model: TinyTPModel) -> None:
    while True:
        cmd, batch, length, max_new, ignore_eos = _broadcast_header(NOOP)
        if cmd == SHUTDOWN:
            return
        if cmd != GENERATE:
            continue
        tokens = torch.empty((batch, length), dtype=torch.int64)
        dist.broadcast(tokens, src=0)
        model.generate(tokens.tolist(), max_new, ignore_eos=bool(ignore_eos))


def _generate_logged(
    model: TinyTPModel,
    args: ServerArgs,
    batch: list[list[int]],
    max_new: int,
    ignore_eos: bool = False,
) -> list[list[int]]:
    logger.info(
        f"Prefill batch. #new-seq: {len(batch)}, #new-token: {len(batch) * len(batch[0])}, "
        f"#cached-token: 0, cache hit rate: 0.00%, token usage: 0.00, #running-req: 0, "
        f"#queue-req: 0"
    )
    started = time.perf_counter()
    interval = max(1, args.decode_log_interval)

    def on_step(step: int) -> None:
        if step and step % interval == 0:
            rate = step * len(batch) / max(time.perf_counter() - started, 1e-9)
            logger.info(
                f"Decode batch. #running-req: {len(batch)}, "
                f"#token: {len(batch) * (len(batch[0]) + step)}, token usage: 0.00, "
                f"gen throughput (token/s): {rate:.2f}, #queue-req: 0"
            )

    return model.generate(batch, max_new, on_step=on_step, ignore_eos=ignore_eos)


def select_device(args: ServerArgs, gpu_id: int) -> None:
    """The fork's model_runner.py: `torch.get_device_module(self.device).set_device(
    self.gpu_id)` before init_process_group. The stand-in computes on the CPU, but where
    the node shows XPU devices (real, or the lab's simulated torch.xpu) it selects its
    device the same way, so a wrong mapping fails here as it would on a Max node. The
    lab's fault `scheduler_device_shift` makes it select another one on purpose."""
    xpu = getattr(torch, "xpu", None)
    if args.device != "xpu" and not (xpu is not None and xpu.is_available()):
        return
    assert xpu is not None
    shift = lab_fault("scheduler_device_shift")
    if isinstance(shift, int):
        gpu_id = (gpu_id + shift) % xpu.device_count()
    xpu.set_device(gpu_id)
    props = xpu.get_device_properties(gpu_id)
    logger.info(f"Selected device xpu:{gpu_id}: {props.name} uuid={getattr(props, 'uuid', '?')}")


def run_scheduler_process(
    server_args: ServerArgs,
    port_args: PortArgs,
    gpu_id: int,
    tp_rank: int,
    dp_rank: int | None,
    pipe_writer: Connection,
) -> None:
    """Body of one scheduler process, spawned by the node's server process with the
    fork's signature (managers/scheduler.py `run_scheduler_process(server_args,
    port_args, gpu_id, tp_rank, dp_rank, pipe_writer)`): untitled-index process title,
    `TP<n>` log prefix."""
    args, rank, ready, requests = server_args, tp_rank, pipe_writer, port_args.requests
    init_addr = port_args.dist_init_addr
    parent = os.getppid()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    kill_itself_when_parent_died()
    set_process_name("sglang::scheduler")  # scheduler.py: no rank index in 0.4.3.post2
    configure_logger(args.log_level, prefix=f" TP{rank}")
    try:
        model = init_rank(args, rank, gpu_id, init_addr)
        ready.send({"status": "ready", "rank": rank, "pid": os.getpid()})
        ready.close()
        if rank == 0:
            assert requests is not None
            _serve_rank0(model, args, requests)
        else:
            _serve_follower(model)
        dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - report like SGLang, then bring the server down
        logger.error(f"Scheduler hit an exception: {traceback.format_exc()}")
        try:
            os.kill(parent, signal.SIGQUIT)
        finally:
            sys.stdout.flush()
            os._exit(1)
    os._exit(0)


def run_detokenizer_process(server_args: ServerArgs, port_args: PortArgs) -> None:
    """The fork's detokenizer process (managers/detokenizer_manager.py: titled
    `sglang::detokenizer`, started on node 0 only, after the schedulers). The stand-in
    detokenizes inside its HTTP process; this process reproduces the layout a launcher
    sees (one more child of the server that is not a rank) and idles until its parent
    goes."""
    kill_itself_when_parent_died()
    set_process_name("sglang::detokenizer")
    configure_logger(server_args.log_level)
    while True:
        signal.pause()


class Frontend:
    """Node 0's door to rank 0: one request at a time through a pipe."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.lock = threading.Lock()
        self.broken: str | None = None

    def generate(
        self,
        batch: list[list[int]],
        max_new_tokens: int,
        timeout: float | None = None,
        ignore_eos: bool = False,
    ) -> list[list[int]]:
        """Outputs per prompt; prompts of different lengths run as separate batches."""
        results: dict[int, list[int]] = {}
        by_length: dict[int, list[int]] = {}
        for index, ids in enumerate(batch):
            by_length.setdefault(len(ids), []).append(index)
        for indices in by_length.values():
            outputs = self._run([batch[i] for i in indices], max_new_tokens, timeout, ignore_eos)
            results.update(zip(indices, outputs, strict=True))
        return [results[i] for i in range(len(batch))]

    def _run(
        self,
        batch: list[list[int]],
        max_new_tokens: int,
        timeout: float | None,
        ignore_eos: bool = False,
    ) -> list[list[int]]:
        if self.broken:
            raise RuntimeError(self.broken)
        if not self.lock.acquire(timeout=-1 if timeout is None else timeout):
            raise TimeoutError("the scheduler is busy")
        try:
            self.conn.send(GenerateRequest(batch, max_new_tokens, ignore_eos))
            if not self.conn.poll(timeout):
                self.broken = "the scheduler did not answer in time"
                raise TimeoutError(self.broken)
            outputs: Any = self.conn.recv()
            return list(outputs)
        except (EOFError, BrokenPipeError, ConnectionResetError) as exc:
            self.broken = f"rank 0 is gone ({type(exc).__name__})"
            raise RuntimeError(self.broken) from exc
        finally:
            self.lock.release()

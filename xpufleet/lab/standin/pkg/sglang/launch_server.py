"""`python -m sglang.launch_server`: this node's tp/nnodes rank processes plus the HTTP server.

As in SGLang 0.4.3 multi-node mode: each node starts ranks node_rank*k .. node_rank*k+k-1;
node 0 serves the API once every rank is up, warms up with an 8-token request and logs
"The server is fired up and ready to roll!"; nodes >= 1 serve a dummy /health. A rank
that fails sends SIGQUIT to the server process, which then takes every local rank down.
A rank killed outright is not noticed here (SGLang 0.4.3 does not either): that is the
launcher's job.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import sys
import threading
import urllib.request
from multiprocessing.connection import Connection, wait
from types import FrameType

from .srt.engine import Frontend, PortArgs, run_detokenizer_process, run_scheduler_process
from .srt.http_server import ServerState, make_server
from .srt.server_args import ServerArgs, prepare_server_args
from .srt.utils import configure_logger, free_port, kill_children, lab_fault

logger = logging.getLogger("sglang.launch_server")

WARMUP_PROMPT = "The capital city of France is"


class Node:
    """The server process of one node and the ranks it forked."""

    def __init__(self, args: ServerArgs) -> None:
        self.args = args
        self.children: list[int] = []
        self.frontend: Frontend | None = None

    def shutdown(self, code: int) -> None:
        kill_children(self.children)
        sys.stdout.flush()
        os._exit(code)

    def on_sigquit(self, signum: int, frame: FrameType | None) -> None:
        logger.error("Received sigquit from a child process. It usually means the child failed.")
        self.shutdown(1)

    def on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        kill_children(self.children, signal.SIGTERM)
        self.shutdown(0)

    def start_ranks(self) -> None:
        """The fork's entrypoints/engine.py `_launch_subprocesses`: start method spawn
        (`mp.set_start_method("spawn", force=True)` in `_set_envs_and_config`), so
        CPython's resource tracker becomes a child too (started by the first spawn,
        before any scheduler); one scheduler per local rank in rank order with
        `gpu_id = base_gpu_id + tp_rank % tp_size_per_node`, `mp.Process(target=
        run_scheduler_process, args=(server_args, port_args, gpu_id, tp_rank, None,
        writer))`; on node 0 a detokenizer process after them; then wait for every
        scheduler's "ready". The lab's fault `scheduler_spawn_order` reverses the order."""
        args = self.args
        init_addr = args.dist_init_addr or f"127.0.0.1:{free_port()}"
        multiprocessing.set_start_method("spawn", force=True)
        per_node = args.tp_per_node
        first = args.node_rank * per_node
        ranks = list(range(first, first + per_node))
        if lab_fault("scheduler_spawn_order") == "reverse":  # the lab's fault, not the fork
            ranks.reverse()
        readers: dict[Connection, int] = {}
        for rank in ranks:
            reader, writer = multiprocessing.Pipe(duplex=False)
            requests = None
            if rank == 0:
                mine, requests = multiprocessing.Pipe()
                self.frontend = Frontend(mine)
            gpu_id = args.base_gpu_id + rank % per_node
            process = multiprocessing.Process(
                target=run_scheduler_process,
                args=(args, PortArgs(init_addr, requests), gpu_id, rank, None, writer),
            )
            process.start()
            assert process.pid is not None
            self.children.append(process.pid)
            writer.close()
            if requests is not None:
                requests.close()
            readers[reader] = rank
        if args.node_rank == 0:
            detokenizer = multiprocessing.Process(
                target=run_detokenizer_process, args=(args, PortArgs(init_addr))
            )
            detokenizer.start()
            assert detokenizer.pid is not None
            self.children.append(detokenizer.pid)
        while readers:
            for reader in wait(list(readers)):
                rank = readers.pop(reader)  # type: ignore[call-overload]
                try:
                    reader.recv()
                except EOFError:
                    logger.error(
                        f"Rank {rank} scheduler is dead. Please check if there are relevant logs."
                    )
                    self.shutdown(1)

    def warm_up(self) -> None:
        """What SGLang does before it declares the server ready (REFERENCE §2)."""
        args = self.args
        host = "127.0.0.1" if args.host in ("0.0.0.0", "") else args.host
        base = f"http://{host}:{args.port}"
        headers = {"Content-Type": "application/json"}
        if args.api_key:
            headers["Authorization"] = f"Bearer {args.api_key}"
        try:
            urllib.request.urlopen(
                urllib.request.Request(f"{base}/get_model_info", headers=headers), timeout=600
            ).read()
            body = {
                "text": WARMUP_PROMPT,
                "sampling_params": {"temperature": 0, "max_new_tokens": 8},
            }
            request = urllib.request.Request(
                f"{base}/generate", data=json.dumps(body).encode(), headers=headers
            )
            urllib.request.urlopen(request, timeout=600).read()
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            logger.error(f"Initialization failed. warmup error: {exc!r}")
            self.shutdown(1)
        logger.info("The server is fired up and ready to roll!")

    def serve(self) -> None:
        args = self.args
        state = ServerState(args, self.frontend if args.node_rank == 0 else None)
        server = make_server(state)
        logger.info(f"INFO:     Started server process [{os.getpid()}]")
        logger.info("INFO:     Waiting for application startup.")
        logger.info("INFO:     Application startup complete.")
        logger.info(
            f"INFO:     Uvicorn running on http://{args.host}:{args.port} (Press CTRL+C to quit)"
        )
        if args.node_rank == 0:
            threading.Thread(target=self.warm_up, name="warmup", daemon=True).start()
        server.serve_forever(poll_interval=0.5)


def launch_server(args: ServerArgs) -> None:
    node = Node(args)
    signal.signal(signal.SIGQUIT, node.on_sigquit)
    signal.signal(signal.SIGTERM, node.on_sigterm)
    signal.signal(signal.SIGINT, node.on_sigterm)
    if args.device != "cpu":
        logger.warning(
            f"lab stand-in: --device {args.device} accepted; the tiny model runs on the CPU"
        )
    node.start_ranks()
    try:
        node.serve()
    except OSError as exc:
        logger.error(f"Failed to start the HTTP server on {args.host}:{args.port}: {exc}")
        node.shutdown(1)


def main(argv: list[str] | None = None) -> None:
    args = prepare_server_args(sys.argv[1:] if argv is None else argv)
    configure_logger(args.log_level)
    launch_server(args)


if __name__ == "__main__":
    main()

"""The server flags of SGLang 0.4.3.post2 (the seed's fork), parsed by argparse as SGLang does.

Unknown flags are rejected as argparse rejects them, and prefixes work (`--model` is
`--model-path`). `--dist-timeout` does not exist in this version (upstream >= 0.4.6).
Flags the stand-in does not act on are accepted and recorded, as a real server would.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass
class ServerArgs:
    model_path: str
    tokenizer_path: str | None = None
    tokenizer_mode: str = "auto"
    skip_tokenizer_init: bool = False
    load_format: str = "auto"
    trust_remote_code: bool = False
    dtype: str = "auto"
    kv_cache_dtype: str = "auto"
    quantization: str | None = None
    quantization_param_path: str | None = None
    context_length: int | None = None
    device: str = "cuda"
    served_model_name: str | None = None
    chat_template: str | None = None
    is_embedding: bool = False
    revision: str | None = None
    host: str = "127.0.0.1"
    port: int = 30000
    mem_fraction_static: float | None = None
    max_running_requests: int | None = None
    max_total_tokens: int | None = None
    chunked_prefill_size: int | None = None
    max_prefill_tokens: int = 16384
    schedule_policy: str = "fcfs"
    schedule_conservativeness: float = 1.0
    cpu_offload_gb: int = 0
    prefill_only_one_req: bool = False
    tp_size: int = 1
    stream_interval: int = 1
    stream_output: bool = False
    random_seed: int | None = None
    constrained_json_whitespace_pattern: str | None = None
    watchdog_timeout: float = 300
    download_dir: str | None = None
    base_gpu_id: int = 0
    log_level: str = "info"
    log_level_http: str | None = None
    log_requests: bool = False
    show_time_cost: bool = False
    enable_metrics: bool = False
    decode_log_interval: int = 40
    api_key: str | None = None
    file_storage_pth: str = "sglang_storage"
    enable_cache_report: bool = False
    dp_size: int = 1
    load_balance_method: str = "round_robin"
    ep_size: int = 1
    dist_init_addr: str | None = None
    nnodes: int = 1
    node_rank: int = 0
    json_model_override_args: str = "{}"
    lora_paths: list[str] | None = None
    max_loras_per_batch: int = 8
    lora_backend: str = "triton"
    attention_backend: str | None = None
    sampling_backend: str | None = None
    grammar_backend: str = "outlines"
    speculative_algorithm: str | None = None
    speculative_draft_model_path: str | None = None
    speculative_num_steps: int = 5
    speculative_num_draft_tokens: int = 64
    speculative_eagle_topk: int = 8
    enable_double_sparsity: bool = False
    disable_radix_cache: bool = False
    disable_jump_forward: bool = False
    disable_cuda_graph: bool = False
    disable_cuda_graph_padding: bool = False
    enable_nccl_nvls: bool = False
    disable_outlines_disk_cache: bool = False
    disable_custom_all_reduce: bool = False
    disable_mla: bool = False
    disable_overlap_schedule: bool = False
    enable_mixed_chunk: bool = False
    enable_dp_attention: bool = False
    enable_ep_moe: bool = False
    enable_torch_compile: bool = False
    torch_compile_max_bs: int = 32
    cuda_graph_max_bs: int | None = None
    cuda_graph_bs: list[int] | None = None
    torchao_config: str = ""
    enable_nan_detection: bool = False
    enable_p2p_check: bool = False
    triton_attention_reduce_in_fp32: bool = False
    triton_attention_num_kv_splits: int = 8
    num_continuous_decode_steps: int = 1
    delete_ckpt_after_loading: bool = False
    enable_memory_saver: bool = False
    allow_auto_truncate: bool = False
    enable_custom_logit_processor: bool = False
    tool_call_parser: str | None = None
    enable_hierarchical_cache: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.tokenizer_path is None:
            self.tokenizer_path = self.model_path
        if self.served_model_name is None:
            self.served_model_name = self.model_path
        if self.random_seed is None:
            self.random_seed = 42

    @staticmethod
    def add_cli_args(parser: argparse.ArgumentParser) -> None:
        add = parser.add_argument
        add("--model-path", type=str, required=True, help="The path of the model weights.")
        add("--tokenizer-path", type=str, default=None)
        add("--host", type=str, default="127.0.0.1", help="The host of the server.")
        add("--port", type=int, default=30000, help="The port of the server.")
        add("--tokenizer-mode", type=str, default="auto", choices=["auto", "slow"])
        add("--skip-tokenizer-init", action="store_true")
        add(
            "--load-format",
            type=str,
            default="auto",
            choices=[
                "auto",
                "pt",
                "safetensors",
                "npcache",
                "dummy",
                "sharded_state",
                "gguf",
                "bitsandbytes",
                "layered",
            ],
        )
        add("--trust-remote-code", action="store_true")
        add(
            "--dtype",
            type=str,
            default="auto",
            choices=["auto", "half", "float16", "bfloat16", "float", "float32"],
        )
        add("--kv-cache-dtype", type=str, default="auto", choices=["auto", "fp8_e5m2", "fp8_e4m3"])
        add("--quantization-param-path", type=str, default=None)
        add("--quantization", type=str, default=None)
        add("--context-length", type=int, default=None)
        add("--device", type=str, default="cuda", choices=["cuda", "xpu", "hpu", "cpu"])
        add("--served-model-name", type=str, default=None)
        add("--chat-template", type=str, default=None)
        add("--is-embedding", action="store_true")
        add("--revision", type=str, default=None)
        add("--mem-fraction-static", type=float, default=None)
        add("--max-running-requests", type=int, default=None)
        add("--max-total-tokens", type=int, default=None)
        add("--chunked-prefill-size", type=int, default=None)
        add("--max-prefill-tokens", type=int, default=16384)
        add(
            "--schedule-policy",
            type=str,
            default="fcfs",
            choices=["lpm", "random", "fcfs", "dfs-weight"],
        )
        add("--schedule-conservativeness", type=float, default=1.0)
        add("--cpu-offload-gb", type=int, default=0)
        add("--prefill-only-one-req", type=bool, default=False)
        add("--tensor-parallel-size", "--tp-size", dest="tp_size", type=int, default=1)
        add("--stream-interval", type=int, default=1)
        add("--stream-output", action="store_true")
        add("--random-seed", type=int, default=None)
        add("--constrained-json-whitespace-pattern", type=str, default=None)
        add("--watchdog-timeout", type=float, default=300)
        add("--download-dir", type=str, default=None)
        add("--base-gpu-id", type=int, default=0)
        add(
            "--log-level",
            type=str,
            default="info",
            choices=["debug", "info", "warning", "error", "critical"],
        )
        add("--log-level-http", type=str, default=None)
        add("--log-requests", action="store_true")
        add("--show-time-cost", action="store_true")
        add("--enable-metrics", action="store_true")
        add("--decode-log-interval", type=int, default=40)
        add("--api-key", type=str, default=None)
        add("--file-storage-pth", type=str, default="sglang_storage")
        add("--enable-cache-report", action="store_true")
        add("--data-parallel-size", "--dp-size", dest="dp_size", type=int, default=1)
        add(
            "--load-balance-method",
            type=str,
            default="round_robin",
            choices=["round_robin", "shortest_queue"],
        )
        add("--expert-parallel-size", "--ep-size", dest="ep_size", type=int, default=1)
        add("--dist-init-addr", "--nccl-init-addr", dest="dist_init_addr", type=str)
        add("--nnodes", type=int, default=1)
        add("--node-rank", type=int, default=0)
        add("--json-model-override-args", type=str, default="{}")
        add("--lora-paths", type=str, nargs="*", default=None)
        add("--max-loras-per-batch", type=int, default=8)
        add("--lora-backend", type=str, default="triton")
        add(
            "--attention-backend",
            type=str,
            choices=["flashinfer", "triton", "torch_native"],
            default=None,
        )
        add("--sampling-backend", type=str, choices=["flashinfer", "pytorch"], default=None)
        add(
            "--grammar-backend",
            type=str,
            choices=["xgrammar", "outlines"],
            default="outlines",
        )
        add("--speculative-algorithm", type=str, choices=["EAGLE"], default=None)
        add("--speculative-draft-model-path", type=str, default=None)
        add("--speculative-num-steps", type=int, default=5)
        add("--speculative-num-draft-tokens", type=int, default=64)
        add("--speculative-eagle-topk", type=int, default=8)
        add("--enable-double-sparsity", action="store_true")
        for flag in (
            "--disable-radix-cache",
            "--disable-jump-forward",
            "--disable-cuda-graph",
            "--disable-cuda-graph-padding",
            "--enable-nccl-nvls",
            "--disable-outlines-disk-cache",
            "--disable-custom-all-reduce",
            "--disable-mla",
            "--disable-overlap-schedule",
            "--enable-mixed-chunk",
            "--enable-dp-attention",
            "--enable-ep-moe",
            "--enable-torch-compile",
            "--enable-nan-detection",
            "--enable-p2p-check",
            "--triton-attention-reduce-in-fp32",
            "--delete-ckpt-after-loading",
            "--enable-memory-saver",
            "--allow-auto-truncate",
            "--enable-custom-logit-processor",
            "--enable-hierarchical-cache",
        ):
            add(flag, action="store_true")
        add("--torch-compile-max-bs", type=int, default=32)
        add("--cuda-graph-max-bs", type=int, default=None)
        add("--cuda-graph-bs", type=int, nargs="+", default=None)
        add("--torchao-config", type=str, default="")
        add("--triton-attention-num-kv-splits", type=int, default=8)
        add("--num-continuous-decode-steps", type=int, default=1)
        add("--tool-call-parser", type=str, choices=["qwen25", "mistral", "llama3"], default=None)

    @classmethod
    def from_cli_args(cls, args: argparse.Namespace) -> ServerArgs:
        names = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{name: getattr(args, name) for name in names if hasattr(args, name)})

    def check(self) -> None:
        """Refuse inconsistent multi-node settings the way the server would fail on them."""
        if self.tp_size < 1 or self.nnodes < 1:
            raise ValueError("--tp-size and --nnodes must be at least 1")
        if self.tp_size % self.nnodes:
            raise ValueError(
                f"tp_size ({self.tp_size}) must be divisible by nnodes ({self.nnodes})"
            )
        if not 0 <= self.node_rank < self.nnodes:
            raise ValueError(f"node_rank {self.node_rank} out of range for nnodes {self.nnodes}")
        if self.nnodes > 1 and not self.dist_init_addr:
            raise ValueError("--dist-init-addr is required when --nnodes > 1")

    @property
    def tp_per_node(self) -> int:
        return self.tp_size // self.nnodes


def prepare_server_args(argv: list[str] | None) -> ServerArgs:
    parser = argparse.ArgumentParser(prog="python -m sglang.launch_server")
    ServerArgs.add_cli_args(parser)
    args = parser.parse_args(argv)
    server_args = ServerArgs.from_cli_args(args)
    try:
        server_args.check()
    except ValueError as exc:
        parser.error(str(exc))
    return server_args

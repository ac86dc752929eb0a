"""LAB ONLY: a vLLM platform plugin that lets CPU vLLM run its Ray executor.

This file is never part of a real deployment. It is copied into the lab's vLLM
environment (xpufleet/lab/vllmenv.py) as the module `xpufleet_lab_vllm_ray_cpu` with an
entry point of group `vllm.platform_plugins`, the group vLLM loads in
`vllm/platforms/__init__.py::resolve_current_platform_cls_qualname` (an activated
out-of-tree plugin wins over the built-in CPU detection).

Why: stock CPU vLLM refuses `--distributed-executor-backend ray` because
`CpuPlatform.ray_device_key` is empty (`vllm/v1/executor/ray_utils.py`: "current
platform cpu does not support ray"). On Intel GPUs the fork's XPUPlatform sets
`ray_device_key = "GPU"` and vLLM asks Ray for `num_gpus` per worker
(`vllm/v1/executor/ray_executor.py`), so the lab does the same on CPU: every lab Ray node
is started with `--num-gpus <devices>` and each worker takes one "GPU". `"CPU"` as the key,
or a custom resource, does not work (measured, REFERENCE §9).

It must not import xpufleet: it runs in an environment without it.
"""

from __future__ import annotations


def register() -> str:
    """The entry point: always activate (the plugin is only installed in the lab env)."""
    return "xpufleet_lab_vllm_ray_cpu.CpuRayPlatform"


def __getattr__(name: str) -> object:
    # The class is built lazily: vLLM imports plugins before `current_platform` exists,
    # and importing vllm.platforms.cpu at module import time would resolve it too early.
    if name == "CpuRayPlatform":
        from vllm.platforms.cpu import CpuPlatform

        class CpuRayPlatform(CpuPlatform):
            """vLLM's CPU platform, schedulable by Ray as one "GPU" per worker."""

            ray_device_key = "GPU"

        # picklable by reference (Ray ships the platform's objects between processes)
        CpuRayPlatform.__qualname__ = "CpuRayPlatform"
        CpuRayPlatform.__module__ = __name__
        globals()["CpuRayPlatform"] = CpuRayPlatform
        return CpuRayPlatform
    raise AttributeError(name)

"""xpufleet lab stand-in for SGLang 0.4.3.post2 (NOT SGLang).

Speaks the CLI (`python -m sglang.launch_server`, `python -m sglang.bench_one_batch`) and
the HTTP API of the seed's fork, and runs a tiny tensor-parallel model over real
torch.distributed (gloo, CPU) so every answer needs every rank.
"""

from .version import __version__

__all__ = ["__version__"]

"""A tiny character-level causal model, split tensor-parallel across ranks.

Attention heads and MLP columns are split over the ranks (column-parallel projections,
row-parallel outputs joined by a real all_reduce), so no rank can answer alone. All
arithmetic is on int64 with fixed seeded weights: sums are exact in any order, so
greedy answers are bit-identical for tp = 1, 2, 4, 8, 16 (a float model would round
differently per split and could flip a near-tie).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

#: printable ASCII plus newline; anything else reads as "?"
CHARS = "".join(chr(c) for c in range(32, 127)) + "\n"
EOS_ID = len(CHARS)
VOCAB_SIZE = len(CHARS) + 1
UNKNOWN_ID = CHARS.index("?")
_INDEX = {ch: i for i, ch in enumerate(CHARS)}

HIDDEN = 64
HEADS = 16
HEAD_DIM = 4
FFN = 256
LAYERS = 2
SEED = 20250304
CLAMP = 1 << 12

AllReduce = Callable[[torch.Tensor], None]


def encode(text: str) -> list[int]:
    return [_INDEX.get(ch, UNKNOWN_ID) for ch in text]


def decode(ids: list[int]) -> str:
    return "".join(CHARS[i] for i in ids if 0 <= i < len(CHARS))


def apply_chat_template(messages: list[dict[str, str]]) -> str:
    """The stand-in's chat format: one block per message, then the assistant's turn."""
    parts = []
    for message in messages:
        content = message.get("content") or ""
        if isinstance(content, list):  # OpenAI content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        parts.append(f"<|{message.get('role', 'user')}|>\n{content}\n")
    return "".join(parts) + "<|assistant|>\n"


@dataclass
class LayerShard:
    wq: torch.Tensor
    wk: torch.Tensor
    wv: torch.Tensor
    wo: torch.Tensor
    w1: torch.Tensor
    w2: torch.Tensor


def _full_weights() -> tuple[torch.Tensor, list[dict[str, torch.Tensor]], torch.Tensor]:
    """Every weight of the model, drawn in a fixed order from a fixed seed."""
    gen = torch.Generator().manual_seed(SEED)

    def draw(bound: int, *shape: int) -> torch.Tensor:
        return torch.randint(-bound, bound + 1, shape, generator=gen, dtype=torch.int64)

    embed = draw(32, VOCAB_SIZE, HIDDEN)
    layers = []
    for _ in range(LAYERS):
        layers.append(
            {
                "wq": draw(3, HIDDEN, HEADS * HEAD_DIM),
                "wk": draw(3, HIDDEN, HEADS * HEAD_DIM),
                "wv": draw(3, HIDDEN, HEADS * HEAD_DIM),
                "wo": draw(3, HEADS * HEAD_DIM, HIDDEN),
                "w1": draw(3, HIDDEN, FFN),
                "w2": draw(3, FFN, HIDDEN),
            }
        )
    head = draw(3, HIDDEN, VOCAB_SIZE)
    return embed, layers, head


def positions(start: int, length: int) -> torch.Tensor:
    """Positional codes without a table (any context length), small integers."""
    pos = torch.arange(start, start + length, dtype=torch.int64).unsqueeze(1)
    dim = torch.arange(HIDDEN, dtype=torch.int64).unsqueeze(0)
    return (pos * 2654435761 + dim * 40503) % 17 - 8


@dataclass
class KVCache:
    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    @property
    def length(self) -> int:
        return int(self.keys[0].shape[2]) if self.keys else 0


class TinyTPModel:
    """This rank's shard of the model; `all_reduce` sums partial outputs across ranks."""

    def __init__(self, tp_rank: int = 0, tp_size: int = 1, all_reduce: AllReduce | None = None):
        if HEADS % tp_size or FFN % tp_size:
            raise ValueError(
                f"num_attention_heads ({HEADS}) must be divisible by tp_size ({tp_size})"
            )
        self.tp_rank = tp_rank
        self.tp_size = tp_size
        self.all_reduce = all_reduce or (lambda tensor: None)
        self.local_heads = HEADS // tp_size
        embed, layers, head = _full_weights()
        self.embed = embed
        self.head = head
        h0, h1 = tp_rank * self.local_heads * HEAD_DIM, (tp_rank + 1) * self.local_heads * HEAD_DIM
        f0, f1 = tp_rank * FFN // tp_size, (tp_rank + 1) * FFN // tp_size
        self.layers = [
            LayerShard(
                wq=w["wq"][:, h0:h1].contiguous(),  # column-parallel
                wk=w["wk"][:, h0:h1].contiguous(),
                wv=w["wv"][:, h0:h1].contiguous(),
                wo=w["wo"][h0:h1, :].contiguous(),  # row-parallel
                w1=w["w1"][:, f0:f1].contiguous(),  # column-parallel
                w2=w["w2"][f0:f1, :].contiguous(),  # row-parallel
            )
            for w in layers
        ]

    @property
    def parameter_count(self) -> int:
        count = self.embed.numel() + self.head.numel()
        for layer in self.layers:
            count += sum(t.numel() for t in vars(layer).values())
        return count

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.local_heads, HEAD_DIM).transpose(1, 2)

    def forward(self, tokens: torch.Tensor, cache: KVCache | None) -> tuple[torch.Tensor, KVCache]:
        """Logits of the last position for tokens [B, T] appended after `cache`."""
        batch, length = tokens.shape
        start = cache.length if cache else 0
        x = self.embed[tokens] + positions(start, length)
        new_cache = KVCache([], [])
        for index, layer in enumerate(self.layers):
            q = self._split_heads(x @ layer.wq)
            k = self._split_heads(x @ layer.wk)
            v = self._split_heads(x @ layer.wv)
            if cache:
                k = torch.cat([cache.keys[index], k], dim=2)
                v = torch.cat([cache.values[index], v], dim=2)
            new_cache.keys.append(k)
            new_cache.values.append(v)
            attended = torch.empty_like(q)
            total = k.shape[2]
            query_pos = torch.arange(start, start + length).unsqueeze(1)
            future = torch.arange(total).unsqueeze(0) > query_pos  # [T, total]
            for h in range(self.local_heads):
                scores = q[:, h] @ k[:, h].transpose(1, 2)  # [B, T, total]
                scores = scores.masked_fill(future, torch.iinfo(torch.int64).min)
                best = scores.argmax(dim=-1)  # hard attention: first best position
                picked = torch.gather(v[:, h], 1, best.unsqueeze(-1).expand(-1, -1, HEAD_DIM))
                attended[:, h] = picked + v[:, h, start:]
            merged = attended.transpose(1, 2).reshape(batch, length, -1)
            out = merged @ layer.wo
            self.all_reduce(out)
            x = torch.clamp(x + torch.div(out, 512, rounding_mode="floor"), -CLAMP, CLAMP)
            hidden = torch.div(torch.relu(x @ layer.w1), 8, rounding_mode="floor")
            out = hidden @ layer.w2
            self.all_reduce(out)
            x = torch.clamp(x + torch.div(out, 64, rounding_mode="floor"), -CLAMP, CLAMP)
        logits = x[:, -1] @ self.head
        return logits, new_cache

    def generate(
        self,
        batch: list[list[int]],
        max_new_tokens: int,
        *,
        on_step: Callable[[int], None] | None = None,
        ignore_eos: bool = False,
    ) -> list[list[int]]:
        """Greedy decoding of equal-length prompts; stops a sequence at EOS unless
        `ignore_eos`: then EOS is one more output token and decoding goes on to
        max_new_tokens, as the fork's Req.check_finished does (python/sglang/srt/
        managers/schedule_batch.py: the EOS match is skipped under
        sampling_params.ignore_eos, which bench_serving always sends)."""
        if not batch or max_new_tokens <= 0:
            return [[] for _ in batch]
        tokens = torch.tensor(batch, dtype=torch.int64)
        outputs: list[list[int]] = [[] for _ in batch]
        finished = [False] * len(batch)
        logits, cache = self.forward(tokens, None)
        for step in range(max_new_tokens):
            next_ids = logits.argmax(dim=-1)
            for i, token in enumerate(next_ids.tolist()):
                if not finished[i]:
                    if token == EOS_ID and not ignore_eos:
                        finished[i] = True
                    else:
                        outputs[i].append(token)
            if on_step:
                on_step(step)
            if all(finished) or step == max_new_tokens - 1:
                break
            logits, cache = self.forward(next_ids.unsqueeze(1), cache)
        return outputs


def reference_completion(prompt: str, max_new_tokens: int) -> str:
    """What the stand-in answers for `prompt`, computed in-process at tp=1 (for tests)."""
    ids = encode(prompt)
    return decode(TinyTPModel().generate([ids], max_new_tokens)[0])

"""One request through a launched server's OpenAI-compatible API, with the real `openai` client."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import XpufleetError


@dataclass(frozen=True)
class ChatAnswer:
    model: str
    content: str
    completion_tokens: int | None
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def chat_once(
    base_url: str, message: str, max_tokens: int = 32, timeout: float = 300.0
) -> ChatAnswer:
    """Ask the server's first model one question, greedily; errors become XpufleetError."""
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="EMPTY", timeout=timeout, max_retries=0)
    try:
        model = client.models.list().data[0].id
        tic = time.perf_counter()
        reply = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": message}],
            max_tokens=max_tokens,
            temperature=0,
        )
    except openai.OpenAIError as exc:
        raise XpufleetError(f"chat request to {base_url} failed: {exc}") from exc
    finally:
        client.close()
    usage = reply.usage.completion_tokens if reply.usage else None
    return ChatAnswer(
        model, reply.choices[0].message.content or "", usage, time.perf_counter() - tic
    )

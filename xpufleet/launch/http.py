"""The control node's HTTP probes of a launched server (health and one real completion)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request


def http_status(url: str, timeout: float) -> int:
    """HTTP status of a GET, 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return 0


def completion_status(base: str, model: str, timeout: float) -> int:
    """Status of one real completion (`POST /v1/completions`, one token): 200 only if the
    answer holds a choice. 0 when nothing answered."""
    body = json.dumps({"model": model, "prompt": "Hello", "max_tokens": 1, "temperature": 0})
    request = urllib.request.Request(
        f"{base}/v1/completions",
        data=body.encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            doc = json.loads(response.read() or b"{}")
            return int(response.status) if doc.get("choices") else 502
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return 0

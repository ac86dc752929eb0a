"""The one probe mechanism: many snippets in ONE remote command, cut back apart by a
random boundary line. Provision probes its steps with it; doctor's probe prints its
facts in the same sections (xpufleet.facts.probe)."""

from __future__ import annotations

import secrets


def new_boundary() -> str:
    """A line no snippet prints by chance (random per probe)."""
    return "@@xpufleet-" + secrets.token_hex(6)


def probe_script(snippets: list[str], boundary: str) -> str:
    """One sh script printing each snippet's output after a `<boundary> <index>` line.

    Each snippet runs in its own subshell with stderr dropped, so one that fails or
    calls `exit` cannot disturb the others.
    """
    parts = []
    for index, snippet in enumerate(snippets):
        parts.append(f"echo; echo '{boundary} {index}'; ( {snippet}\n) 2>/dev/null")
    parts.append(f"echo; echo '{boundary} end'")
    return "\n".join(parts) + "\n"


def split_probe(stdout: str, boundary: str, count: int) -> list[str]:
    """The probe's output cut back into one text per snippet (missing -> "")."""
    sections: dict[int, list[str]] = {}
    current: int | None = None
    for line in stdout.splitlines():
        if line.startswith(boundary + " "):
            tag = line[len(boundary) + 1 :].strip()
            current = int(tag) if tag.isdigit() else None
            if current is not None:
                sections[current] = []
            continue
        if current is not None:
            sections[current].append(line)
    return ["\n".join(sections.get(i, [])).strip("\n") for i in range(count)]

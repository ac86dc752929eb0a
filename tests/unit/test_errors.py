"""Errors choose their runbook section by what they are, never by words in a message."""

from __future__ import annotations

import pytest

from xpufleet.errors import (
    BecomeFailed,
    CommandFailed,
    ConnectionLost,
    HashMismatch,
    HostError,
    LockHeld,
    PipFailed,
    TransferFailed,
    XpufleetError,
)
from xpufleet.provision.engine import ANCHORS, RUNBOOK, anchor_for
from xpufleet.runbooks import anchors


def every_error_class(root: type = XpufleetError) -> list[type]:
    found = []
    for sub in root.__subclasses__():
        found += [sub, *every_error_class(sub)]
    return found


def test_every_anchor_an_error_carries_is_a_heading_of_the_provision_runbook() -> None:
    carried = {cls.anchor for cls in every_error_class() if cls.anchor}
    assert carried <= set(ANCHORS) <= anchors(RUNBOOK)


@pytest.mark.parametrize(
    ("error", "anchor"),
    [
        (CommandFailed("n1", "sh", 1, "write error: Broken pipe"), "failed-step"),
        (PipFailed("n1", "pip", 1, "ResolutionImpossible"), "pip-conflicts"),
        (HashMismatch("n1", "cat", 65, "got 00, expected ff"), "wheel-hash-mismatch"),
        (TransferFailed("n1", "cat", 1, "No space left on device"), "interrupted-transfer"),
        (ConnectionLost("n1", "transfer cut off: EOF"), "interrupted-transfer"),
        (LockHeld("n1", "node is locked by launch"), "lock-held"),
        (BecomeFailed("n1", "sudo needs a password (ansible_become)"), "sudo-needs-a-password"),
        (HostError("n1", "pip install pipes sha256 mismatch locked by"), "failed-step"),
    ],
)
def test_the_anchor_is_the_errors_own(error: HostError, anchor: str) -> None:
    assert anchor_for(error) == anchor


def test_a_refiled_command_failure_keeps_its_details() -> None:
    pip = PipFailed.of(CommandFailed("n1", "pip install x", 97, "ERROR: conflict"))
    assert (pip.host, pip.command, pip.exit_status, pip.stderr) == (
        "n1", "pip install x", 97, "ERROR: conflict",
    )  # fmt: skip
    assert isinstance(pip, CommandFailed) and pip.kind == "pip"

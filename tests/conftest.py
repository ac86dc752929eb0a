"""Fixtures shared by every test directory: the session-wide lab cluster.

Tests that need nodes take the `lab` fixture (an `xpufleet.lab.Lab`): ONE lab of four
nodes serves the whole session. Which lab: XPUFLEET_LAB_DIR / XPUFLEET_LAB_NET /
XPUFLEET_LAB_PORT (default .lab, 127.0.1, 22022). A lab that is already up is reused
(converged to the default profile: four healthy nodes); the lab is brought down when
the session ends, also after failures, unless XPUFLEET_LAB_KEEP=1.

Faults are shared state: inject them with `with lab.fault(node, name): ...`, which
heals them on the way out.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from xpufleet.lab import Lab

LAB_NODES = 4
# no test reads the operator's ~/.ssh/config (tests that want one name their own file)
os.environ["XPUFLEET_SSH_CONFIG"] = "none"
# Tests press Ctrl-C (SIGINT) as an operator at a terminal does. A shell without job
# control starts background commands (`make test &` in a CI script) with SIGINT ignored,
# and an ignored signal stays ignored across exec: the tools under test would never see
# it. Handling it here makes every child start with the default, as under a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """The session's lab cluster (4 nodes, default profile)."""
    the_lab = Lab.from_env()
    try:
        the_lab.up(nodes=LAB_NODES)
        yield the_lab
    finally:
        if os.environ.get("XPUFLEET_LAB_KEEP") != "1":
            the_lab.down()

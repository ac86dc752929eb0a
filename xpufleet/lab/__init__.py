"""The embedded lab cluster: simulated Intel Max nodes (real sshd per node) on this machine.

`Lab` (cluster.py) is the API: up/down/status/inject/heal; `profile.py` parses lab
profiles; `sim/` holds what a node simulates. See docs/design.md ("The lab").
"""

from .cluster import Lab, LabStatus, NodeStatus, pid_alive
from .profile import FAULTS, LabError, LabProfileError, NodeSpec, Profile, load_profile

__all__ = [
    "FAULTS",
    "Lab",
    "LabError",
    "LabProfileError",
    "LabStatus",
    "NodeSpec",
    "NodeStatus",
    "Profile",
    "load_profile",
    "pid_alive",
]

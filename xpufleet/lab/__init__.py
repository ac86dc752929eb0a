"""The embedded lab cluster: simulated Intel Max nodes (real sshd per node) on this machine.

`Lab` (cluster.py) is the API: up/down/status/inject/heal; `profile.py` parses lab
profiles; `sim/` holds what a node simulates. See docs/design.md ("The lab").
"""

from .cluster import Lab, LabStatus, NodeStatus
from .faults import FAULTS
from .processes import pid_alive
from .profile import LabError, LabProfileError, NodeSpec, Profile, load_profile

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

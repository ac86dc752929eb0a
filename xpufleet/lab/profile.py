"""Lab profiles: what hardware each lab node simulates and which faults it carries.

A profile is a small YAML file (see `xpufleet/lab/profiles/*.yaml`):

    count: 4                  # nodes when `lab.up` gets no --nodes
    defaults:                 # every node, unless overridden below
      gpu_model: max1550      # max1550 | max1100
      cards: 4
      hierarchy: FLAT         # FLAT (one device per tile) | COMPOSITE (one per card)
      driver: i915            # i915 | xe
      driver_version: I915_23.10.32_PSB_231129.32
      oneapi: "2025.1"
      xpu_smi: 1.2.39.20240906
      faults: []
    nodes:
      node3:
        faults: [old_oneapi, {clock_skew: 600}]

Parsing is strict and happens before anything is started: a bad value is refused
with the file, line and key (exit 2), like the inventory.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from ..errors import InputError, XpufleetError

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
DEFAULT_PROFILE = PROFILES_DIR / "default.yaml"


class LabProfileError(InputError):
    """The lab profile is malformed; names file, line and key."""


class LabError(XpufleetError):
    """The lab could not be set up or changed (exit 1)."""


@dataclass(frozen=True)
class GpuModel:
    """Facts of one Max card model (REFERENCE §4, fixtures 01/10a/11a)."""

    key: str
    name: str
    pci_device_id: int
    tiles: int
    memory_gb: int
    #: what torch.xpu reports per tile (FLAT), in MB
    tile_memory_mb: int
    eus_per_tile: int


GPU_MODELS: dict[str, GpuModel] = {
    "max1550": GpuModel("max1550", "Intel(R) Data Center GPU Max 1550", 0x0BD5, 2, 128, 65520, 512),
    "max1100": GpuModel("max1100", "Intel(R) Data Center GPU Max 1100", 0x0BDA, 1, 48, 49136, 448),
}

#: oneAPI release -> component versions (directory names under /opt/intel/oneapi/<comp>/)
ONEAPI_RELEASES: dict[str, dict[str, str]] = {
    "2023.2": {
        "compiler": "2023.2.0",
        "ccl": "2021.10.0",
        "mpi": "2021.10.0",
        "tbb": "2021.10.0",
        "mkl": "2023.2.0",
    },
    "2024.0": {
        "compiler": "2024.0",
        "ccl": "2021.11",
        "mpi": "2021.11",
        "tbb": "2021.11",
        "mkl": "2024.0",
    },
    "2024.1": {
        "compiler": "2024.1",
        "ccl": "2021.12",
        "mpi": "2021.12",
        "tbb": "2021.12",
        "mkl": "2024.1",
    },
    "2024.2": {
        "compiler": "2024.2",
        "ccl": "2021.13",
        "mpi": "2021.13",
        "tbb": "2021.13",
        "mkl": "2024.2",
    },
    "2025.0": {
        "compiler": "2025.0",
        "ccl": "2021.14",
        "mpi": "2021.14",
        "tbb": "2022.0",
        "mkl": "2025.0",
    },
    "2025.1": {
        "compiler": "2025.1",
        "ccl": "2021.15",
        "mpi": "2021.15",
        "tbb": "2022.1",
        "mkl": "2025.1",
    },
    "2025.2": {
        "compiler": "2025.2",
        "ccl": "2021.16",
        "mpi": "2021.16",
        "tbb": "2022.2",
        "mkl": "2025.2",
    },
    "2025.3": {
        "compiler": "2025.3",
        "ccl": "2021.17",
        "mpi": "2021.17",
        "tbb": "2022.3",
        "mkl": "2025.3",
    },
}


#: the lab's launch ports: SSH port + offset. The offsets are 1000 apart, so labs whose SSH
#: ports differ by less than 1000 never share one (the default lab: 29022, 30022, 31022);
#: all stay below Linux's ephemeral range (32768) for SSH ports up to 23767. Labs share
#: one network namespace and torch's TCPStore listens on every address.
LAUNCH_PORT_OFFSETS: dict[str, int] = {
    "rendezvous_port": 7000,
    "sglang_port": 8000,
    "supervisor_port": 9000,
}
LAUNCH_PORT_NAMES = tuple(LAUNCH_PORT_OFFSETS)

_DRIVERS = ("i915", "xe")
_HIERARCHIES = ("FLAT", "COMPOSITE")
_NODE_NAME = re.compile(r"^node([1-9][0-9]*)$")
_SIZE = re.compile(r"^[1-9][0-9]*[KMG]?$")
_VERSION = re.compile(r"^[0-9]+(\.[0-9]+)+$")
_DRIVER_VERSION = re.compile(r"^[A-Za-z0-9._+~-]+$")


@dataclass(frozen=True)
class Fault:
    """One fault on one node, with its parameter (or None)."""

    name: str
    param: Any = None

    def label(self) -> str:
        return self.name if self.param is None else f"{self.name}={self.param}"


@dataclass(frozen=True)
class NodeSpec:
    """Everything one lab node simulates: its hardware and software, and its faults."""

    gpu_model: str = "max1550"
    cards: int = 4
    hierarchy: str = "FLAT"
    driver: str = "i915"
    driver_version: str = "I915_23.10.32_PSB_231129.32"
    oneapi: str = "2025.1"
    xpu_smi: str = "1.2.39.20240906"
    level_zero: str = "1.20.2"
    compute_runtime: str = "24.13.29138.29"
    faults: tuple[Fault, ...] = field(default=())

    @property
    def model(self) -> GpuModel:
        return GPU_MODELS[self.gpu_model]

    @property
    def tiles(self) -> int:
        """Devices the node exposes in its hierarchy mode."""
        per_card = self.model.tiles if self.hierarchy == "FLAT" else 1
        return self.cards * per_card

    def fault(self, name: str) -> Fault | None:
        return next((f for f in self.faults if f.name == name), None)

    def hardware(self) -> dict[str, Any]:
        """The fields that need a node restart when they change (everything but faults)."""
        data = asdict(self)
        data.pop("faults")
        return data

    def hardware_hash(self) -> str:
        blob = json.dumps(self.hardware(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True)
class Profile:
    """A parsed lab profile: node count, defaults and per-node overrides."""

    path: str
    count: int = 4
    defaults: NodeSpec = field(default_factory=NodeSpec)
    overrides: dict[int, NodeSpec] = field(default_factory=dict)

    def node(self, index: int) -> NodeSpec:
        """The spec of node<index> (1-based)."""
        return self.overrides.get(index, self.defaults)


_FIELD_TYPES: dict[str, type] = {
    "gpu_model": str,
    "cards": int,
    "hierarchy": str,
    "driver": str,
    "driver_version": str,
    "oneapi": str,
    "xpu_smi": str,
    "level_zero": str,
    "compute_runtime": str,
    "faults": list,
}


class _Parser:
    """Walks the composed YAML nodes so every error can name its line."""

    def __init__(self, path: str) -> None:
        self.path = path

    def error(self, node: yaml.Node | None, key: str | None, message: str) -> LabProfileError:
        line = node.start_mark.line + 1 if node is not None else None
        return LabProfileError(message, file=self.path, line=line, key=key)

    def mapping(self, node: yaml.Node, key: str | None) -> list[tuple[str, yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, key, "expected a mapping")
        items: list[tuple[str, yaml.Node, yaml.Node]] = []
        seen: set[str] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.error(key_node, key, "keys must be plain names")
            name = str(key_node.value)
            if name in seen:
                raise self.error(key_node, name, "duplicate key")
            seen.add(name)
            items.append((name, key_node, value_node))
        return items

    def scalar(self, node: yaml.Node, key: str, typ: type) -> Any:
        """A scalar as `typ`; strings keep their text (`2025.10` stays `2025.10`)."""
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(node, key, f"expected a {'string' if typ is str else 'number'}")
        if typ is int:
            if not node.tag.endswith(":int"):
                raise self.error(node, key, f"expected an integer, got {node.value!r}")
            return int(yaml.safe_load(node.value))
        if node.tag.endswith((":null", ":bool")) or node.value == "":
            raise self.error(node, key, f"expected a string, got {node.value!r}")
        return str(node.value)

    def faults(self, node: yaml.Node, key: str) -> tuple[Fault, ...]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(node, key, "expected a list of faults")
        faults: list[Fault] = []
        from .faults import FAULTS  # the faults' handlers import the lab's machinery

        for item in node.value:
            if isinstance(item, yaml.ScalarNode):
                name, param_node = str(item.value), None
            else:
                pairs = self.mapping(item, key)
                if len(pairs) != 1:
                    raise self.error(item, key, "a fault with a parameter is {name: value}")
                name, _, param_node = pairs[0]
            if name not in FAULTS:
                known = ", ".join(FAULTS)
                raise self.error(item, key, f"unknown fault '{name}' (known: {known})")
            if any(f.name == name for f in faults):
                raise self.error(item, key, f"fault '{name}' listed twice")
            faults.append(Fault(name, self.fault_param(name, param_node, key)))
        return tuple(faults)

    def fault_param(self, name: str, node: yaml.Node | None, key: str) -> Any:
        from .faults import FAULTS

        default = FAULTS[name].default
        if node is None:
            return default
        where = f"{key}.{name}"
        if default is None:
            raise self.error(node, where, f"fault '{name}' takes no parameter")
        if name == "old_oneapi":
            version = self.scalar(node, where, str)
            if version not in ONEAPI_RELEASES:
                raise self.error(node, where, f"unknown oneAPI release '{version}'")
            return version
        if name == "full_disk":
            size = self.scalar(node, where, str)
            if not _SIZE.match(size):
                raise self.error(node, where, "a tmpfs size such as 1M")
            return size
        ports = ("blocked_port", "blocked_egress")
        if name in ports and not node.tag.endswith(":int"):
            port_name = self.scalar(node, where, str)
            if port_name not in LAUNCH_PORT_NAMES:
                raise self.error(
                    node, where, f"a TCP port or one of {', '.join(LAUNCH_PORT_NAMES)}"
                )
            return port_name
        value = self.scalar(node, where, int)
        if name in ports and not 1 <= value <= 65535:
            raise self.error(node, where, "a TCP port between 1 and 65535")
        if name == "clock_skew" and value == 0:
            raise self.error(node, where, "a clock skew of 0 seconds is no fault")
        return value

    def node_spec(self, node: yaml.Node, base: NodeSpec, where: str) -> NodeSpec:
        values: dict[str, Any] = {}
        for name, key_node, value_node in self.mapping(node, where):
            key = f"{where}.{name}"
            if name not in _FIELD_TYPES:
                known = ", ".join(_FIELD_TYPES)
                raise self.error(key_node, key, f"unknown setting (known: {known})")
            if name == "faults":
                values[name] = self.faults(value_node, key)
                continue
            value = self.scalar(value_node, key, _FIELD_TYPES[name])
            self.check_value(name, value, value_node, key)
            values[name] = value
        return replace(base, **values)

    def check_value(self, name: str, value: Any, node: yaml.Node, key: str) -> None:
        allowed: dict[str, tuple[Any, ...]] = {
            "gpu_model": tuple(GPU_MODELS),
            "hierarchy": _HIERARCHIES,
            "driver": _DRIVERS,
            "oneapi": tuple(ONEAPI_RELEASES),
        }
        if name in allowed and value not in allowed[name]:
            choices = ", ".join(str(c) for c in allowed[name])
            raise self.error(node, key, f"'{value}' is not one of: {choices}")
        if name == "cards" and not 1 <= value <= 16:
            raise self.error(node, key, "cards must be between 1 and 16")
        if name in ("xpu_smi", "level_zero", "compute_runtime") and not _VERSION.match(value):
            raise self.error(node, key, f"'{value}' is not a dotted version")
        if name == "driver_version" and not _DRIVER_VERSION.match(value):
            raise self.error(node, key, f"'{value}' is not a driver version string")

    def profile(self, root: yaml.Node | None) -> Profile:
        if root is None:
            return Profile(self.path)
        count = 4
        defaults = NodeSpec()
        nodes_node: yaml.Node | None = None
        for name, key_node, value_node in self.mapping(root, None):
            if name == "count":
                count = self.scalar(value_node, name, int)
                if not 1 <= count <= 250:
                    raise self.error(value_node, name, "count must be between 1 and 250")
            elif name == "defaults":
                defaults = self.node_spec(value_node, defaults, "defaults")
            elif name == "nodes":
                nodes_node = value_node
            else:
                raise self.error(key_node, name, "unknown key (known: count, defaults, nodes)")
        overrides: dict[int, NodeSpec] = {}
        if nodes_node is not None:
            for name, key_node, value_node in self.mapping(nodes_node, "nodes"):
                match = _NODE_NAME.match(name)
                if not match:
                    raise self.error(key_node, f"nodes.{name}", "node names are node1, node2, ...")
                overrides[int(match.group(1))] = self.node_spec(
                    value_node, defaults, f"nodes.{name}"
                )
        return Profile(self.path, count, defaults, overrides)


def parse_profile(text: str, path: str = "<profile>") -> Profile:
    """Parse profile text; every error names `path`, the line and the key."""
    parser = _Parser(path)
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise LabProfileError(f"YAML error: {problem}", file=path, line=line) from None
    return parser.profile(root)


def load_profile(path: str | Path | None = None) -> Profile:
    """Read a profile file (default: the packaged default profile)."""
    target = Path(path) if path is not None else DEFAULT_PROFILE
    try:
        text = target.read_text()
    except OSError as exc:
        raise LabProfileError(f"cannot read profile: {exc.strerror}", file=str(target)) from None
    return parse_profile(text, str(target))

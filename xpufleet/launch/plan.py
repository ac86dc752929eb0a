"""The launch plan: which node runs which ranks on which devices, with which environment
and which exact `sglang.launch_server` command. Pure: no SSH, unit-tested on its own.

SGLang multi-node rules it encodes (REFERENCE §2, §3, §6): `--tp-size` is the TOTAL
across nodes; every node gets the same `--dist-init-addr` (node 0's address on the
rendezvous NIC); node k runs ranks k*per .. k*per+per-1 on its devices 0..per-1;
`--device xpu` is explicit (SGLang's default is cuda); oneCCL needs LOCAL_RANK /
LOCAL_WORLD_SIZE per rank or it falls back to the global rank and size; the NIC goes
into GLOO_SOCKET_IFNAME, CCL_KVS_IFACE and FI_TCP_IFACE. An impossible plan is a
PlanError (exit 2) that says why, before any host is touched.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import PlanError
from ..host import Host
from ..variables import var, venv_python

#: share of a device's memory the weights may take when mem_fraction_static is unset
#: (SGLang keeps the rest for the KV cache and activations)
DEFAULT_USABLE_FRACTION = 0.9
#: variables every node of one launch must agree on
UNIFORM_VARS = ("device", "dist_backend", "model_name", "sglang_port")


@dataclass(frozen=True)
class ModelFit:
    """Does a model's weights fit in the planned devices? One arithmetic, shared with doctor."""

    model_size_gb: float
    devices: int
    device_memory_gb: float
    usable_fraction: float
    capacity_gb: float
    fits: bool
    min_devices: int

    @property
    def message(self) -> str:
        verdict = "fits" if self.fits else "does not fit"
        text = (
            f"model ({self.model_size_gb:g} GB) {verdict} in {self.devices} device(s) x "
            f"{self.device_memory_gb:g} GB x {self.usable_fraction:.2f} usable = "
            f"{self.capacity_gb:.1f} GB"
        )
        if not self.fits:
            text += f"; it needs at least {self.min_devices} devices"
        return text


def model_fit(
    model_size_gb: float,
    devices: int,
    device_memory_gb: float,
    usable_fraction: float = DEFAULT_USABLE_FRACTION,
) -> ModelFit:
    """Weights split over `devices` must fit in each device's usable memory."""
    per_device = device_memory_gb * usable_fraction
    capacity = devices * per_device
    min_devices = max(1, math.ceil(model_size_gb / per_device)) if per_device > 0 else 0
    return ModelFit(
        model_size_gb=float(model_size_gb),
        devices=devices,
        device_memory_gb=float(device_memory_gb),
        usable_fraction=float(usable_fraction),
        capacity_gb=capacity,
        fits=per_device > 0 and model_size_gb <= capacity,
        min_devices=min_devices,
    )


def devices_per_node(host: Host) -> int:
    """Devices the node exposes: tiles in FLAT mode, cards in COMPOSITE mode."""
    if str(var(host, "device_hierarchy")).upper() == "COMPOSITE":
        return int(var(host, "cards"))
    return int(var(host, "tiles"))


def rendezvous_address(node0: Host) -> str:
    """Where ranks rendezvous: node 0's `rendezvous_address`, else its inventory address."""
    return str(var(node0, "rendezvous_address") or node0.address)


def device_memory_gb(host: Host) -> float:
    """Memory of one device: a tile, or in COMPOSITE mode a card (all its tiles)."""
    tile = float(var(host, "tile_memory_gb"))
    if str(var(host, "device_hierarchy")).upper() == "COMPOSITE":
        cards = max(1, int(var(host, "cards")))
        return tile * max(1, int(var(host, "tiles")) // cards)
    return tile


def usable_fraction(host: Host) -> float:
    fraction = var(host, "mem_fraction_static")
    return float(fraction) if fraction else DEFAULT_USABLE_FRACTION


@dataclass(frozen=True)
class RankPlan:
    """One rank: global rank, rank within its node, the node-local device it drives."""

    rank: int
    local_rank: int
    device: int
    #: what this rank's process needs on top of the node's environment
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NodePlan:
    """What one node runs."""

    host: str
    address: str
    node_rank: int
    ranks: tuple[RankPlan, ...]
    device_mask: str
    env: dict[str, str]
    argv: tuple[str, ...]
    python: str
    http_host: str
    http_port: int
    state_dir: str
    install_dir: str

    @property
    def rank_span(self) -> str:
        first, last = self.ranks[0].rank, self.ranks[-1].rank
        return str(first) if first == last else f"{first}-{last}"

    @property
    def http_address(self) -> str:
        """Where the control node reaches this node's HTTP server."""
        return self.address if self.http_host in ("0.0.0.0", "::", "") else self.http_host


@dataclass(frozen=True)
class LaunchPlan:
    """The whole launch: every node's part plus what they share."""

    tp: int
    nnodes: int
    ranks_per_node: int
    rendezvous_address: str
    rendezvous_port: int
    supervisor_port: int
    dist_init_addr: str
    device: str
    backend: str
    model_path: str
    model_name: str
    fit: ModelFit
    preflight_timeout: float
    ready_timeout: float
    nodes: tuple[NodePlan, ...]
    warnings: tuple[str, ...] = ()

    @property
    def node0(self) -> NodePlan:
        return self.nodes[0]

    @property
    def base_url(self) -> str:
        """OpenAI base URL of the served model (node 0 serves the API)."""
        return f"http://{url_host(self.node0.http_address)}:{self.node0.http_port}/v1"

    def node(self, host: str) -> NodePlan:
        for node in self.nodes:
            if node.host == host:
                return node
        raise KeyError(host)

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["fit"]["message"] = self.fit.message
        doc["base_url"] = self.base_url
        doc["nodes"] = [
            {
                **asdict(node),
                "argv": list(node.argv),
                "ranks": [asdict(r) for r in node.ranks],
                "rank_span": node.rank_span,
                "http_address": node.http_address,
            }
            for node in self.nodes
        ]
        doc["warnings"] = list(self.warnings)
        return doc


def url_host(address: str) -> str:
    """An address as it goes into a URL or HOST:PORT (IPv6 in brackets, sglang#2892)."""
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


def _is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return False
    return True


def default_nnodes(tp: int, hosts: Sequence[Host]) -> int:
    """As few nodes as the ranks need: the smallest n dividing tp whose first n hosts
    each have at least tp/n devices."""
    for n in range(1, len(hosts) + 1):
        if tp % n == 0 and all(devices_per_node(h) >= tp // n for h in hosts[:n]):
            return n
    total = sum(devices_per_node(h) for h in hosts)
    raise PlanError(
        f"not enough nodes: --tp {tp} needs {tp} devices but the {len(hosts)} selected "
        f"host(s) expose {total} in total (or no node count divides {tp} evenly)",
        key="--tp",
    )


def node_env(host: Host, per_node: int) -> dict[str, str]:
    """Node-wide environment of every rank: devices, NIC, oneCCL/libfabric."""
    env: dict[str, str] = {
        "ZE_FLAT_DEVICE_HIERARCHY": str(var(host, "device_hierarchy")).upper(),
        "ZE_AFFINITY_MASK": ",".join(str(d) for d in range(per_node)),
        "ONEAPI_DEVICE_SELECTOR": "level_zero:gpu",
        "LOCAL_WORLD_SIZE": str(per_node),
        "CCL_PROCESS_LAUNCHER": "none",
        "CCL_ATL_TRANSPORT": str(var(host, "ccl_atl_transport")),
        "FI_PROVIDER": str(var(host, "fi_provider")),
        "CCL_ZE_IPC_EXCHANGE": str(var(host, "ccl_ze_ipc_exchange")),
    }
    nic = var(host, "nic")
    if nic:
        env.update(GLOO_SOCKET_IFNAME=str(nic), CCL_KVS_IFACE=str(nic), FI_TCP_IFACE=str(nic))
    allreduce = var(host, "ccl_allreduce")
    if allreduce:
        env["CCL_ALLREDUCE"] = str(allreduce)
    for name, value in dict(var(host, "ccl_env") or {}).items():
        env[str(name)] = str(value)
    return env


def _check_uniform(hosts: Sequence[Host]) -> None:
    for name in UNIFORM_VARS:
        values = {h.name: var(h, name) for h in hosts}
        if len(set(map(str, values.values()))) > 1:
            shown = ", ".join(f"{h}={v}" for h, v in values.items())
            raise PlanError(f"nodes of one launch must agree on '{name}': {shown}", key=name)


def plan_launch(
    hosts: Sequence[Host],
    tp: int,
    nnodes: int | None = None,
    *,
    model_path: str | None = None,
    model_name: str | None = None,
) -> LaunchPlan:
    """Plan `--tp` ranks over the first `nnodes` of `hosts` (inventory order; node 0 first)."""
    if tp < 1:
        raise PlanError(f"--tp must be at least 1, got {tp}", key="--tp")
    if not hosts:
        raise PlanError("no hosts selected (check --hosts and --limit)", key="--limit")
    if nnodes is None:
        nnodes = default_nnodes(tp, hosts)
    if nnodes < 1:
        raise PlanError(f"--nnodes must be at least 1, got {nnodes}", key="--nnodes")
    if nnodes > len(hosts):
        names = ", ".join(h.name for h in hosts)
        raise PlanError(
            f"not enough nodes: --nnodes {nnodes} but only {len(hosts)} host(s) are "
            f"selected ({names})",
            key="--nnodes",
        )
    if tp % nnodes:
        raise PlanError(
            f"--tp {tp} is not divisible by --nnodes {nnodes}: every node runs tp/nnodes ranks",
            key="--tp",
        )
    chosen = list(hosts[:nnodes])
    per_node = tp // nnodes
    for host in chosen:
        have = devices_per_node(host)
        if per_node > have:
            raise PlanError(
                f"more ranks per node than devices: {per_node} ranks per node but "
                f"{host.name} exposes {have} device(s) "
                f"({var(host, 'device_hierarchy')}, tiles={var(host, 'tiles')}, "
                f"cards={var(host, 'cards')}); use more nodes (--nnodes)",
                key="--tp",
            )
    _check_uniform(chosen)
    head = chosen[0]
    device = str(var(head, "device"))
    backend = str(var(head, "dist_backend"))
    if backend == "xccl" and device != "xpu":
        raise PlanError(
            f"dist_backend xccl needs device xpu (inventory says device {device}); "
            "use dist_backend gloo for CPU",
            key="dist_backend",
        )
    model_path = model_path or str(var(head, "model_path"))
    model_name = model_name or str(var(head, "model_name"))
    fit = model_fit(
        float(var(head, "model_size_gb")),
        tp,
        min(device_memory_gb(h) for h in chosen),
        min(usable_fraction(h) for h in chosen),
    )
    if not fit.fits:
        raise PlanError(f"model does not fit: {fit.message} (--tp {tp})", key="model_size_gb")

    rendezvous_host = rendezvous_address(head)
    rendezvous_port = int(var(head, "rendezvous_port"))
    dist_init_addr = f"{url_host(rendezvous_host)}:{rendezvous_port}"
    warnings: list[str] = []
    if not _is_ip(rendezvous_host):
        warnings.append(
            f"rendezvous address {rendezvous_host!r} is a name: if it resolves to "
            "127.0.1.1 or another NIC the ranks cannot meet; set rendezvous_address to "
            "node 0's IP on the rendezvous NIC"
        )
    if nnodes > 1 and not all(var(h, "nic") for h in chosen):
        missing = ", ".join(h.name for h in chosen if not var(h, "nic"))
        warnings.append(
            f"nic is not set on {missing}: GLOO_SOCKET_IFNAME/CCL_KVS_IFACE/FI_TCP_IFACE "
            "stay unset and oneCCL picks the first non-lo interface"
        )

    nodes: list[NodePlan] = []
    for node_rank, host in enumerate(chosen):
        env = node_env(host, per_node)
        ranks = tuple(
            RankPlan(
                rank=node_rank * per_node + local,
                local_rank=local,
                device=local,
                env={"LOCAL_RANK": str(local), "LOCAL_WORLD_SIZE": str(per_node)},
            )
            for local in range(per_node)
        )
        python = venv_python(var(host, "venv"))
        http_host = str(var(host, "sglang_host"))
        http_port = int(var(host, "sglang_port"))
        argv: list[str] = [
            python,
            "-m",
            "sglang.launch_server",
            "--model-path",
            str(model_path),
            "--served-model-name",
            str(model_name),
            "--tp-size",
            str(tp),
            "--nnodes",
            str(nnodes),
            "--node-rank",
            str(node_rank),
            "--dist-init-addr",
            dist_init_addr,
            "--device",
            device,
            "--host",
            http_host,
            "--port",
            str(http_port),
            "--trust-remote-code",
        ]
        fraction = var(host, "mem_fraction_static")
        if fraction:
            argv += ["--mem-fraction-static", str(fraction)]
        argv += [str(a) for a in var(host, "sglang_extra_args") or []]
        nodes.append(
            NodePlan(
                host=host.name,
                address=host.address,
                node_rank=node_rank,
                ranks=ranks,
                device_mask=env["ZE_AFFINITY_MASK"],
                env=env,
                argv=tuple(argv),
                python=python,
                http_host=http_host,
                http_port=http_port,
                state_dir=str(var(host, "state_dir")),
                install_dir=str(var(host, "install_dir")),
            )
        )
    return LaunchPlan(
        tp=tp,
        nnodes=nnodes,
        ranks_per_node=per_node,
        rendezvous_address=rendezvous_host,
        rendezvous_port=rendezvous_port,
        supervisor_port=int(var(head, "supervisor_port")),
        dist_init_addr=dist_init_addr,
        device=device,
        backend=backend,
        model_path=str(model_path),
        model_name=str(model_name),
        fit=fit,
        preflight_timeout=float(var(head, "preflight_timeout")),
        ready_timeout=float(var(head, "ready_timeout")),
        nodes=tuple(nodes),
        warnings=tuple(warnings),
    )

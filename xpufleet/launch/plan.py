"""The launch plan: which node runs which ranks on which devices, with which environment
and which exact `sglang.launch_server` command. Pure: no SSH, unit-tested on its own.

SGLang multi-node rules it encodes (REFERENCE §2, §3, §6): `--tp-size` is the TOTAL
across nodes; every node gets the same `--dist-init-addr` (node 0's address on the
rendezvous NIC); node k runs ranks k*per .. k*per+per-1, and rank r drives the node's
device `base_gpu_id + r % per` as the fork's `engine.py` computes `gpu_id` (the index
counts the devices left visible by ZE_AFFINITY_MASK); `--device xpu` is explicit
(SGLang's default is cuda). oneCCL, started without mpiexec (`CCL_PROCESS_LAUNCHER=none`),
reads its local layout only from CCL_LOCAL_RANK / CCL_LOCAL_SIZE (oneCCL
`src/common/global/global.cpp`, `set_local_coord`); LOCAL_RANK / LOCAL_WORLD_SIZE are
read by nobody on xccl (torch-xpu-ops main and releases do not copy them). We can set
CCL_LOCAL_* only where we start each rank ourselves: the preflight. The NIC goes into
GLOO_SOCKET_IFNAME, CCL_KVS_IFACE and (tcp provider) FI_TCP_IFACE. Every variable of the
plan's environment has a one-line reason (`ENV_REASONS`, shown by `--plan --explain`).
An impossible plan -- two ranks on one device included -- is a PlanError (exit 2) that
says why, before any host is touched.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import PlanError
from ..host import Host
from ..sizing import (  # the planner's arithmetic, shared with doctor (sizing.py)
    ModelFit,
    card_of,
    default_nnodes,
    device_memory_gb,
    devices_per_node,
    model_fit,
    rendezvous_address,
    usable_fraction,
)
from ..variables import venv_python
from .engines import Engine, NodeContext, get_engine

#: variables every node of one launch must agree on (plus each engine's `uniform_vars`)
UNIFORM_VARS = ("device", "dist_backend", "model_name")


#: why each variable of a plan's environment is there: who reads it (one line each).
#: A variable nobody reads does not go into the plan.
ENV_REASONS: dict[str, str] = {
    "ZE_FLAT_DEVICE_HIERARCHY": "Level Zero: FLAT = one device per tile, COMPOSITE = per card",
    "ZE_AFFINITY_MASK": "Level Zero: the devices this node's ranks may see, in this order",
    "ONEAPI_DEVICE_SELECTOR": "SYCL runtime: Level Zero GPUs only (no OpenCL/CPU duplicates)",
    "CCL_PROCESS_LAUNCHER": "oneCCL: ranks are not started by mpiexec/hydra; local layout "
    "comes from CCL_LOCAL_* (set per rank by the preflight)",
    "CCL_ATL_TRANSPORT": "oneCCL: transport between nodes (ofi = libfabric)",
    "FI_PROVIDER": "libfabric: provider oneCCL's ofi transport uses (tcp, cxi, verbs, ...)",
    "CCL_ZE_IPC_EXCHANGE": "oneCCL: how ranks of one node exchange GPU memory handles "
    "(pidfd needs kernel >= 5.6 and ptrace permission)",
    "GLOO_SOCKET_IFNAME": "torch gloo (SGLang's CPU group): interface of its sockets",
    "CCL_KVS_IFACE": "oneCCL: interface of its key-value store (else first non-lo interface)",
    "FI_TCP_IFACE": "libfabric tcp provider: interface it sends on",
    "CCL_ALLREDUCE": "oneCCL: all-reduce algorithm (inventory ccl_allreduce)",
    "CCL_LOCAL_RANK": "oneCCL: this rank's index on its node (preflight ranks only)",
    "CCL_LOCAL_SIZE": "oneCCL: ranks on this node (preflight ranks only)",
    "LOCAL_WORLD_SIZE": "vLLM fork's xpu_worker.py: workers on this node (it defaults it to "
    "the WORLD size, wrong across nodes)",
    "VLLM_HOST_IP": "vLLM: this node's address (else a route lookup, the wrong NIC on "
    "multi-homed nodes); Ray workers inherit it from `ray start`",
    "RAY_ADDRESS": "Ray: the cluster the OpenAI server's Ray executor joins (node 0's GCS)",
    "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "Ray 2.60 `ray start`: on SIGTERM it drains the "
    "node for Ray Serve first (default up to 30 s, ray/_private/node.py); 0 = stop at once",
}
#: environment variables the planner owns; `ccl_env` may not override them
PLANNED_ONLY = ("ZE_AFFINITY_MASK", "CCL_LOCAL_RANK", "CCL_LOCAL_SIZE")


@dataclass(frozen=True)
class RankPlan:
    """One rank: global rank, rank within its node, the node-local device it drives
    (an index into the devices ZE_AFFINITY_MASK leaves visible, as `torch.xpu.set_device`
    takes it) and the physical device that is."""

    rank: int
    local_rank: int
    device: int
    #: the node's device number before ZE_AFFINITY_MASK (what sycl-ls shows)
    physical_device: int = -1
    #: the card holding it: xpu-smi's device id, what `xpu-smi ps` reports per process
    card: int = -1
    #: what this rank's process needs on top of the node's environment (preflight)
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
    #: False where the node runs no HTTP server (vLLM's Ray workers)
    serves_http: bool = True
    #: a server started beside the node's process, after the preflight (vLLM on the head)
    server_argv: tuple[str, ...] = ()
    server_env: dict[str, str] = field(default_factory=dict)

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
    engine: str = "sglang"
    pp: int = 1

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
                "server_argv": list(node.server_argv),
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


def assign_devices(host: Host, per_node: int, base: int = 0) -> tuple[list[int], list[int]]:
    """(ZE_AFFINITY_MASK entries, physical device of each local rank).

    Local rank l drives visible device `base_gpu_id + l` (the fork's `engine.py`:
    `gpu_id = base_gpu_id + tp_rank % tp_size_per_node`; `model_runner.py` then calls
    `torch.xpu.set_device(gpu_id)`). Two ranks on one device make oneCCL silently leave
    its Level Zero IPC algorithms (REFERENCE §3): refused here, with the reason."""
    have = devices_per_node(host)
    ids = list(host.var.device_ids) or list(range(have))
    where = f"{host.name} ({host.var.device_hierarchy}, {have} device(s))"
    wrong = [d for d in ids if not 0 <= d < have]
    if wrong:
        raise PlanError(f"device_ids {wrong} do not exist on {where}", key="device_ids")
    if len(set(ids)) != len(ids):
        raise PlanError(
            f"device_ids {ids} on {host.name} name a device twice: two ranks would share it",
            key="device_ids",
        )
    if base + per_node > len(ids):
        raise PlanError(
            f"oversubscribed: {per_node} rank(s) per node need devices "
            f"{base}..{base + per_node - 1} but {where} offers {len(ids)} (device_ids {ids}, "
            f"base gpu id {base}); two ranks would share a device and oneCCL would leave its "
            "GPU-to-GPU (Level Zero IPC) path; use more nodes (--nnodes) or a smaller --tp",
            key="--tp",
        )
    used = ids[: base + per_node]
    return used, [used[base + local] for local in range(per_node)]


def node_env(host: Host, mask: Sequence[int]) -> dict[str, str]:
    """Node-wide environment of every rank: devices, NIC, oneCCL/libfabric. Only variables
    something reads (ENV_REASONS says what)."""
    provider = host.var.fi_provider
    env: dict[str, str] = {
        "ZE_FLAT_DEVICE_HIERARCHY": host.var.device_hierarchy,
        "ZE_AFFINITY_MASK": ",".join(str(d) for d in mask),
        "ONEAPI_DEVICE_SELECTOR": "level_zero:gpu",
        "CCL_PROCESS_LAUNCHER": "none",
        "CCL_ATL_TRANSPORT": host.var.ccl_atl_transport,
        "FI_PROVIDER": provider,
        "CCL_ZE_IPC_EXCHANGE": host.var.ccl_ze_ipc_exchange,
    }
    nic = host.var.nic
    if nic:
        env.update(GLOO_SOCKET_IFNAME=nic, CCL_KVS_IFACE=nic)
        if provider == "tcp":
            env["FI_TCP_IFACE"] = nic
    allreduce = host.var.ccl_allreduce
    if allreduce:
        env["CCL_ALLREDUCE"] = allreduce
    for name, value in host.var.ccl_env.items():
        if str(name) in PLANNED_ONLY:
            raise PlanError(
                f"ccl_env may not set {name}: the planner sets it per node/rank "
                "(use device_ids to choose devices)",
                key="ccl_env",
            )
        env[str(name)] = str(value)
    return env


def env_reason(name: str) -> str:
    """Why `name` is in the plan's environment (one line)."""
    return ENV_REASONS.get(name, "inventory ccl_env or engine_env: set by the operator")


def explain_env(plan: LaunchPlan) -> list[tuple[str, str, str, str]]:
    """(host, variable, value, reason) for every variable of every node's environment,
    then the per-rank variables the preflight sets."""
    rows = []
    for node in plan.nodes:
        for name, value in sorted(node.env.items()):
            rows.append((node.host, name, value, env_reason(name)))
        for rank in node.ranks:
            for name, value in sorted(rank.env.items()):
                rows.append((f"{node.host} rank {rank.rank}", name, value, env_reason(name)))
    return rows


def _check_uniform(hosts: Sequence[Host], engine: Engine) -> None:
    for name in UNIFORM_VARS + engine.uniform_vars:
        values = {h.name: h.var.values[name] for h in hosts}
        if len(set(map(str, values.values()))) > 1:
            shown = ", ".join(f"{h}={v}" for h, v in values.items())
            raise PlanError(f"nodes of one launch must agree on '{name}': {shown}", key=name)


def check_one_connector(hosts: Sequence[Host]) -> None:
    """One launch runs over one connector: its ranks start as one srun step or as SSH
    supervisors, not both (a step cannot kill an SSH node's ranks, nor the reverse)."""
    by_connector: dict[str, list[Host]] = {}
    for host in hosts:
        by_connector.setdefault(host.var.connector, []).append(host)
    if len(by_connector) < 2:
        return
    parts, where = [], None
    for connector, members in sorted(by_connector.items()):
        source = members[0].var_sources.get("connector")
        written = f"{source[0]}:{source[1]}" if source else "the default"
        verb = "use" if len(members) > 1 else "uses"
        parts.append(f"{', '.join(h.name for h in members)} {verb} {connector} ({written})")
        where = where or source
    raise PlanError(
        "one launch cannot mix connectors: " + "; ".join(parts) + " -- select hosts of one "
        "connector (--limit) or set `connector` alike for all of them",
        file=where[0] if where else None,
        line=where[1] if where else None,
        key="connector",
    )


def in_slurm_order(hosts: Sequence[Host], node_order: Sequence[str]) -> list[Host]:
    """`hosts` in the order of Slurm's node table (`node_order`): srun numbers a step's
    nodes (SLURM_NODEID) by that table, whatever order -w or the inventory gives
    (slurmctld builds the step's node list from its node bitmap: step_mgr.c,
    bitmap2node_name_sortable; the table is sorted by natural name order or by the
    topology plugin's ranking: read_config.c, _sort_node_record_table_ptr)."""
    index = {name: i for i, name in enumerate(node_order)}
    unknown = [h.name for h in hosts if h.name not in index]
    if unknown:
        raise PlanError(
            f"Slurm does not know node(s) {', '.join(unknown)} (scontrol show node): the "
            "inventory names of slurm hosts must be Slurm's node names",
            key="connector",
        )
    return sorted(hosts, key=lambda h: index[h.name])


def plan_launch(
    hosts: Sequence[Host],
    tp: int,
    nnodes: int | None = None,
    *,
    engine: str | None = None,
    pp: int = 1,
    model_path: str | None = None,
    model_name: str | None = None,
    node_order: Callable[[Sequence[Host]], Sequence[str]] | None = None,
) -> LaunchPlan:
    """Plan `--tp` (x `pp`) ranks over the first `nnodes` of `hosts` (inventory order; node 0
    first) for `engine` (default: node 0's inventory variable `engine`). Slurm hosts take
    node ranks in the order `node_order(chosen)` gives (Slurm's node table, asked only for
    slurm hosts): the order in which srun gives them SLURM_NODEID. Hosts of two connectors
    are refused before anything is asked."""
    if tp < 1:
        raise PlanError(f"--tp must be at least 1, got {tp}", key="--tp")
    if pp < 1:
        raise PlanError(f"--pp must be at least 1, got {pp}", key="--pp")
    if not hosts:
        raise PlanError("no hosts selected (check --hosts and --limit)", key="--limit")
    chosen_engine = get_engine(engine or hosts[0].var.engine)
    if pp > 1 and chosen_engine.name != "vllm":
        raise PlanError(f"--pp is for vLLM; {chosen_engine.title} takes --tp only", key="--pp")
    world = tp * pp
    if nnodes is None:
        nnodes = default_nnodes(world, hosts)
    if nnodes < 1:
        raise PlanError(f"--nnodes must be at least 1, got {nnodes}", key="--nnodes")
    if nnodes > len(hosts):
        names = ", ".join(h.name for h in hosts)
        raise PlanError(
            f"not enough nodes: --nnodes {nnodes} but only {len(hosts)} host(s) are "
            f"selected ({names})",
            key="--nnodes",
        )
    if world % nnodes:
        what = f"--tp {tp}" if pp == 1 else f"{world} workers (tp {tp} x pp {pp})"
        raise PlanError(
            f"{what} is not divisible by --nnodes {nnodes}: every node runs tp/nnodes ranks",
            key="--tp",
        )
    chosen = list(hosts[:nnodes])
    check_one_connector(chosen)
    if node_order is not None and chosen[0].var.connector == "slurm":
        chosen = in_slurm_order(chosen, node_order(chosen))
    per_node = world // nnodes
    for host in chosen:
        have = devices_per_node(host)
        if per_node > have:
            raise PlanError(
                f"oversubscribed: more ranks per node than devices: {per_node} ranks per node but "
                f"{host.name} exposes {have} device(s) "
                f"({host.var.device_hierarchy}, tiles={host.var.tiles}, "
                f"cards={host.var.cards}); use more nodes (--nnodes)",
                key="--tp",
            )
    _check_uniform(chosen, chosen_engine)
    head = chosen[0]
    device = head.var.device
    if head.var.dist_backend == "xccl" and device != "xpu":
        raise PlanError(
            f"dist_backend xccl needs device xpu (inventory says device {device}); "
            "use dist_backend gloo for CPU",
            key="dist_backend",
        )
    backend = chosen_engine.backend(head)
    model_path = model_path or head.var.model_path
    model_name = model_name or head.var.model_name
    fit = model_fit(
        head.var.model_size_gb,
        world,
        min(device_memory_gb(h) for h in chosen),
        min(usable_fraction(h) for h in chosen),
    )
    if not fit.fits:
        raise PlanError(f"model does not fit: {fit.message} (--tp {tp})", key="model_size_gb")

    rendezvous_host = rendezvous_address(head)
    rendezvous_port = head.var.rendezvous_port
    dist_init_addr = chosen_engine.dist_init_addr(head, rendezvous_host)
    warnings: list[str] = []
    if not _is_ip(rendezvous_host):
        warnings.append(
            f"rendezvous address {rendezvous_host!r} is a name: if it resolves to "
            "127.0.1.1 or another NIC the ranks cannot meet; set rendezvous_address to "
            "node 0's IP on the rendezvous NIC"
        )
    if nnodes > 1 and not all(h.var.nic for h in chosen):
        missing = ", ".join(h.name for h in chosen if not h.var.nic)
        warnings.append(
            f"nic is not set on {missing}: GLOO_SOCKET_IFNAME/CCL_KVS_IFACE/FI_TCP_IFACE "
            "stay unset and oneCCL picks the first non-lo interface"
        )

    addresses = [rendezvous_host] + [rendezvous_address(h) for h in chosen[1:]]
    bases = chosen_engine.rank_bases(addresses, per_node)
    nodes: list[NodePlan] = []
    for node_rank, host in enumerate(chosen):
        mask, physical = assign_devices(host, per_node, chosen_engine.base_gpu_id(host))
        base = chosen_engine.base_gpu_id(host)
        ranks = tuple(
            RankPlan(
                rank=bases[node_rank] + local,
                local_rank=local,
                device=base + local,
                physical_device=physical[local],
                card=card_of(host, physical[local]),
                env={"CCL_LOCAL_RANK": str(local), "CCL_LOCAL_SIZE": str(per_node)},
            )
            for local in range(per_node)
        )
        python = venv_python(host.var.venv)
        http_host, http_port = chosen_engine.http(host)
        ctx = NodeContext(
            host=host, node_rank=node_rank, nnodes=nnodes, tp=tp, pp=pp, per_node=per_node,
            model_path=str(model_path), model_name=str(model_name), device=device,
            python=python, address=addresses[node_rank], head_address=rendezvous_host,
            rendezvous_port=rendezvous_port, dist_init_addr=dist_init_addr,
            http_host=http_host, http_port=http_port,
        )  # fmt: skip
        env = {**node_env(host, mask), **chosen_engine.node_env(ctx)}
        serves = chosen_engine.serves_http(node_rank)
        nodes.append(
            NodePlan(
                host=host.name,
                address=host.address,
                node_rank=node_rank,
                ranks=ranks,
                device_mask=env["ZE_AFFINITY_MASK"],
                env=env,
                argv=chosen_engine.node_argv(ctx),
                python=python,
                http_host=http_host if serves else "",
                http_port=http_port if serves else 0,
                state_dir=host.var.state_dir,
                install_dir=host.var.install_dir,
                serves_http=serves,
                server_argv=chosen_engine.server_argv(ctx),
                server_env=chosen_engine.server_env(ctx),
            )
        )
    return LaunchPlan(
        tp=tp,
        nnodes=nnodes,
        ranks_per_node=per_node,
        rendezvous_address=rendezvous_host,
        rendezvous_port=rendezvous_port,
        supervisor_port=head.var.supervisor_port,
        dist_init_addr=dist_init_addr,
        device=device,
        backend=backend,
        model_path=str(model_path),
        model_name=str(model_name),
        fit=fit,
        preflight_timeout=head.var.preflight_timeout,
        ready_timeout=head.var.ready_timeout,
        nodes=tuple(nodes),
        warnings=tuple(warnings),
        engine=chosen_engine.name,
        pp=pp,
    )

"""What the inventory says one node should look like: the second input of every node check."""

from __future__ import annotations

from dataclasses import dataclass

from ..facts.devices import MODELS_BY_KEY, GpuModel
from ..host import Host
from ..variables import var


@dataclass(frozen=True)
class Expect:
    """What the inventory says one node should look like (defaults from variables.py)."""

    host: str
    address: str
    gpu_model: str
    cards: int
    tiles: int
    device_hierarchy: str
    nic: str | None
    oneapi_min_version: str
    ccl_min_version: str
    torch_min_version: str
    pip_packages: tuple[str, ...]
    conda_packages: tuple[str, ...]
    python_env: str
    venv: str
    min_free_disk_gb: float
    min_free_mem_gb: float
    max_clock_offset_s: float
    ports: tuple[int, ...]
    tile_memory_gb: float
    stack: tuple[str, ...] = ("torch", "triton", "vllm", "sglang")
    node0: str | None = None
    ccl_ze_ipc_exchange: str = "pidfd"
    fi_provider: str = "tcp"
    #: where ranks rendezvous: node 0's rendezvous_address or its inventory address
    rendezvous_address: str | None = None
    python_imports: tuple[str, ...] = ()
    engine: str = "sglang"
    ray_requirement: str = "ray>=2.9"

    @classmethod
    def from_host(cls, host: Host, node0: Host | None = None) -> Expect:
        return cls(
            host=host.name,
            address=host.address,
            gpu_model=str(var(host, "gpu_model")),
            cards=int(var(host, "cards")),
            tiles=int(var(host, "tiles")),
            device_hierarchy=str(var(host, "device_hierarchy")).upper(),
            nic=var(host, "nic"),
            oneapi_min_version=str(var(host, "oneapi_min_version")),
            ccl_min_version=str(var(host, "ccl_min_version")),
            torch_min_version=str(var(host, "torch_min_version")),
            pip_packages=tuple(str(p) for p in var(host, "pip_packages")),
            conda_packages=tuple(str(p) for p in var(host, "conda_packages")),
            python_env=str(var(host, "python_env")),
            venv=str(var(host, "venv")),
            stack=stack_of(host),
            min_free_disk_gb=float(var(host, "min_free_disk_gb")),
            min_free_mem_gb=float(var(host, "min_free_mem_gb")),
            max_clock_offset_s=float(var(host, "max_clock_offset_s")),
            ports=ports_of(host),
            tile_memory_gb=float(var(host, "tile_memory_gb")),
            node0=node0.name if node0 else None,
            ccl_ze_ipc_exchange=str(var(host, "ccl_ze_ipc_exchange")),
            fi_provider=str(var(host, "fi_provider")),
            rendezvous_address=(
                str(var(node0, "rendezvous_address") or node0.address) if node0 else None
            ),
            python_imports=tuple(str(m) for m in var(host, "python_imports") or ()),
            engine=str(var(host, "engine")),
            ray_requirement=str(var(host, "ray_requirement")),
        )

    @property
    def model(self) -> GpuModel | None:
        return MODELS_BY_KEY.get(self.gpu_model)

    @property
    def devices(self) -> int:
        """Devices the node should expose: tiles (FLAT) or cards (COMPOSITE)."""
        return self.cards if self.device_hierarchy == "COMPOSITE" else self.tiles

    @property
    def tiles_per_card(self) -> int:
        return max(1, self.tiles // max(1, self.cards))


def stack_of(host: Host) -> tuple[str, ...]:
    """The components doctor requires: `stack`, plus vLLM when it is the engine."""
    stack = tuple(str(c) for c in var(host, "stack"))
    if var(host, "engine") == "vllm" and "vllm" not in stack:
        stack += ("vllm",)
    return stack


def ports_of(host: Host) -> tuple[int, ...]:
    """Ports a leftover process must not hold: SGLang's HTTP and rendezvous ports, or
    with engine vllm vLLM's HTTP port and Ray's fixed ones (GCS `ray_port` and
    `ray_ports`: a stale Ray there makes `ray start` fail or join the wrong cluster;
    vLLM's workers meet through Ray, not on `rendezvous_port`)."""
    ports = {int(var(host, "sglang_port")), int(var(host, "rendezvous_port"))}
    if var(host, "engine") == "vllm":
        ports = {int(var(host, "vllm_port")), int(var(host, "ray_port"))}
        ports |= {int(p) for p in var(host, "ray_ports") or ()}
    return tuple(sorted(ports))

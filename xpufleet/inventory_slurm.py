"""`plugin: slurm` inventories: hosts from a Slurm allocation, job or partition.

Ansible's inventory-plugin convention: a YAML file whose `plugin:` names the source.

    plugin: slurm
    slurm_conf: /etc/slurm/slurm.conf   # optional: SLURM_CONF for every Slurm command
    job: 1234                 # optional: that job's nodes; else `partition: NAME`;
                              # else the current allocation (SLURM_JOB_NODELIST)
    group: gpu_nodes          # the group the nodes go in (default gpu_nodes)
    compose:                  # optional, Ansible's `compose`: a variable per host from
      ansible_host: slurm_node_addr   # a Jinja2 expression over slurm_node_name,
                                      # slurm_node_addr, slurm_node_hostname
    vars: {connector: slurm, ...}     # like `all: vars:`

The file becomes an ordinary inventory document (`all: vars` + one group of hosts), so
group_vars/, host_vars/, validation and precedence are those of any inventory. The
hosts get `slurm_job` (the job whose allocation steps run in, when there is one) and
`slurm_conf` (absolute) unless the file sets them.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import InventoryError

KEYS = ("plugin", "slurm_conf", "job", "partition", "group", "compose", "vars")
DEFAULT_GROUP = "gpu_nodes"
#: the Slurm fields a `compose` expression can read (name -> `scontrol show node` key)
NODE_FIELDS = {
    "slurm_node_name": "NodeName",
    "slurm_node_addr": "NodeAddr",
    "slurm_node_hostname": "NodeHostName",
}
COMMAND_TIMEOUT = 30.0
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _line(mapping: Any, key: Any) -> int | None:
    lines = getattr(mapping, "key_lines", None)
    if lines and key in lines:
        return int(lines[key])
    return getattr(mapping, "line", None)


def parse_node_records(text: str) -> dict[str, dict[str, str]]:
    """`scontrol show node -o` output -> {NodeName: {Key: value}} (one node per line)."""
    nodes: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if "NodeName" in fields:
            nodes[fields["NodeName"]] = fields
    return nodes


def slurm_env(slurm_conf: str | None) -> dict[str, str]:
    """The control node's environment, with SLURM_CONF when the inventory names one."""
    env = dict(os.environ)
    if slurm_conf:
        env["SLURM_CONF"] = slurm_conf
    return env


def _slurm(argv: Sequence[str], env: Mapping[str, str], shown: str, key: str) -> str:
    """Run a Slurm client command; failing to ask Slurm is bad input (exit 2)."""
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, env=dict(env), timeout=COMMAND_TIMEOUT
        )
    except FileNotFoundError:
        raise InventoryError(
            f"`{argv[0]}` not found: this inventory reads its hosts from Slurm", file=shown, key=key
        ) from None
    except subprocess.TimeoutExpired:
        raise InventoryError(
            f"`{' '.join(argv)}` did not answer within {COMMAND_TIMEOUT:.0f}s", file=shown, key=key
        ) from None
    if proc.returncode != 0:
        raise InventoryError(
            f"`{' '.join(argv)}` failed: {(proc.stderr or proc.stdout).strip()[-300:]}",
            file=shown,
            key=key,
        )
    return proc.stdout


def _expand(nodelist: str, env: Mapping[str, str], shown: str, key: str) -> list[str]:
    if not nodelist.strip() or nodelist.strip() == "(null)":
        return []
    out = _slurm(["scontrol", "show", "hostnames", nodelist.strip()], env, shown, key)
    return [name for name in out.split() if name]


def _job_nodelist(job: str, env: Mapping[str, str], shown: str) -> str:
    out = _slurm(["squeue", "-h", "-j", job, "-o", "%N"], env, shown, "job")
    return out.strip()


def _partition_nodelist(partition: str, env: Mapping[str, str], shown: str) -> str:
    out = _slurm(["sinfo", "-h", "-p", partition, "-o", "%N"], env, shown, "partition")
    return ",".join(line.strip() for line in out.splitlines() if line.strip())


def _compose(
    data: Mapping[str, Any], names: list[str], records: dict[str, dict[str, str]], shown: str
) -> dict[str, dict[str, Any]]:
    """Ansible's `compose`: each variable a Jinja2 expression over the node's fields."""
    from jinja2 import TemplateError
    from jinja2.sandbox import SandboxedEnvironment

    compose = data.get("compose") or {}
    if not isinstance(compose, Mapping):
        raise InventoryError(
            "`compose` maps variable names to expressions",
            file=shown,
            line=_line(data, "compose"),
            key="compose",
        )
    sandbox = SandboxedEnvironment()
    result: dict[str, dict[str, Any]] = {name: {} for name in names}
    for var, expression in compose.items():
        where = _line(compose, var)
        try:
            evaluate = sandbox.compile_expression(str(expression), undefined_to_none=False)
        except TemplateError as exc:
            raise InventoryError(
                f"bad expression {expression!r}: {exc}", file=shown, line=where, key=str(var)
            ) from None
        for name in names:
            record = records.get(name, {})
            context = {v: record.get(k, name) for v, k in NODE_FIELDS.items()}
            try:
                value = evaluate(**context)
            except TemplateError as exc:
                raise InventoryError(
                    f"expression {expression!r} failed for {name}: {exc}",
                    file=shown,
                    line=where,
                    key=str(var),
                ) from None
            result[name][str(var)] = value
    return result


def _text(data: Mapping[str, Any], key: str, shown: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise InventoryError(
            f"expected a name or number, got {value!r}", file=shown, line=_line(data, key), key=key
        )
    return str(value).strip()


def expand(data: Mapping[str, Any], path: Path, shown: str) -> dict[str, Any]:
    """The `plugin: slurm` file as an ordinary inventory document (hosts asked of Slurm)."""
    for key in data:
        if key not in KEYS:
            raise InventoryError(
                f"unknown key of a `plugin: slurm` inventory (known: {', '.join(KEYS)})",
                file=shown,
                line=_line(data, key),
                key=str(key),
            )
    variables = data.get("vars") or {}
    if not isinstance(variables, Mapping):
        raise InventoryError(
            "`vars` is a mapping of variables", file=shown, line=_line(data, "vars"), key="vars"
        )
    group = _text(data, "group", shown) or DEFAULT_GROUP
    if not _NAME.match(group) or group in ("all", "ungrouped"):
        raise InventoryError(
            f"not a group name: {group!r}", file=shown, line=_line(data, "group"), key="group"
        )
    conf = _text(data, "slurm_conf", shown)
    if conf is not None:
        conf = os.path.abspath(path.parent / Path(conf).expanduser())
    env = slurm_env(conf)
    job, partition = _text(data, "job", shown), _text(data, "partition", shown)
    if job and partition:
        raise InventoryError(
            "name either `job` or `partition`, not both", file=shown, line=_line(data, "job"),
            key="job",
        )  # fmt: skip
    if job:
        nodelist, source = _job_nodelist(job, env, shown), "job"
    elif partition:
        nodelist, source = _partition_nodelist(partition, env, shown), "partition"
    else:
        nodelist, source = os.environ.get("SLURM_JOB_NODELIST", ""), "plugin"
        job = os.environ.get("SLURM_JOB_ID") or None
        if not nodelist:
            raise InventoryError(
                "no Slurm allocation: run inside one (salloc -N2 invoke ...) or name "
                "`job:` or `partition:` in the file",
                file=shown,
                line=_line(data, "plugin"),
                key="plugin",
            )
    names = _expand(nodelist, env, shown, source)
    if not names:
        raise InventoryError(
            f"Slurm lists no nodes for this {source}", file=shown, line=_line(data, source),
            key=source,
        )  # fmt: skip
    records: dict[str, dict[str, str]] = {}
    if data.get("compose"):
        out = _slurm(["scontrol", "show", "node", "-o", ",".join(names)], env, shown, "compose")
        records = parse_node_records(out)
    per_host = _compose(data, names, records, shown)
    extra: dict[str, Any] = {}
    if job and "slurm_job" not in variables:
        extra["slurm_job"] = job
    if conf and "slurm_conf" not in variables:
        extra["slurm_conf"] = conf
    all_vars = variables
    if extra:  # keep the file's own mapping (its line numbers name errors) and add ours
        all_vars = type(variables)()
        all_vars.update(variables)
        for attr in ("line", "key_lines"):
            if hasattr(variables, attr):
                setattr(all_vars, attr, getattr(variables, attr))
        all_vars.update(extra)
    return {
        "all": {
            "vars": all_vars,
            "children": {group: {"hosts": {name: per_host[name] or None for name in names}}},
        }
    }


def expand_plugin(data: Mapping[str, Any], path: Path, shown: str) -> dict[str, Any]:
    """Dispatch on `plugin:` (only `slurm` so far)."""
    plugin = data.get("plugin")
    if plugin == "slurm":
        return expand(data, path, shown)
    raise InventoryError(
        f"unknown inventory plugin {plugin!r}: xpufleet reads YAML inventories and `plugin: slurm`",
        file=shown,
        line=_line(data, "plugin"),
        key="plugin",
    )

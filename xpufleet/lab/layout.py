"""What a lab node is made of on disk: its own directories, the lab's shared files, the
files it simulates (node.json, torch.json, its bin dir, sshd_config, /dev/dri) and the
spec nodeinit.py mounts it from.

Lab directory layout (`lab_dir`):
    id_ed25519, authorized_keys, known_hosts, inventory.yaml, state.json, .lock
    shared/                              oneAPI trees, dpkg status, hosts, bashrc, ...
    nodes/node<i>/ssh_host_ed25519_key   kept across up/down (known_hosts stays valid)
    nodes/node<i>/{fs,bin}               the node's own files; wiped by down
    nodes/node<i>/{sshd_config,sshd.pid,node.log,spec.json}
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import bastion, sshd
from .profile import NodeSpec
from .sim import generate

if TYPE_CHECKING:
    from .cluster import Lab

#: each node's own directories: (name under nodes/node<i>/fs, mount point on the node)
NODE_DIRS: tuple[tuple[str, str], ...] = (
    ("opt_intel", "/opt/intel"),
    ("opt_xpufleet", "/opt/xpufleet"),
    ("var_lib_xpufleet", "/var/lib/xpufleet"),
    ("models", "/models"),
    ("dev_dri", "/dev/dri"),
)
#: the group that owns the simulated render nodes (see bastion.DRI_GROUP)
DRI_GROUP = bastion.DRI_GROUP
#: where a node sees its oneAPI release (a read-only bind of the lab's shared copy)
ONEAPI_MOUNT = "/opt/intel/oneapi"
#: faults the stand-in SGLang reads itself, from /opt/intel/.lab/engine_faults.json
ENGINE_FAULTS = ("scheduler_spawn_order", "scheduler_device_shift")
#: mount points that must exist on the host (empty directories there)
HOST_MOUNT_POINTS = ("/opt/intel", "/opt/xpufleet", "/var/lib/xpufleet", "/models",
                     "/etc/OpenCL/vendors", "/dev/dri")  # fmt: skip
#: the machine's local package folders, hidden on every node (an empty read-only
#: directory over each that exists): with OFFLINE_PIP_ENV, a node's pip sees nothing
HIDDEN_PACKAGE_DIRS = ("/opt/pypi", "/opt/pypi-more", "/opt/wheels")


def render_dri(directory: Path, cards: int) -> None:
    """The node's /dev/dri: card<n> and renderD<128+n> character devices (226, as the DRM
    driver registers them), root:video 0660, matching the simulated /sys/class/drm."""
    import grp

    try:
        gid = grp.getgrnam(DRI_GROUP).gr_gid
    except KeyError:
        gid = 0
    for n in range(cards):
        for name, minor in ((f"card{n}", n), (f"renderD{128 + n}", 128 + n)):
            path = directory / name
            if not path.exists():
                os.mknod(path, 0o660 | stat.S_IFCHR, os.makedev(226, minor))
            os.chown(path, 0, gid)
            path.chmod(0o660)


def oneapi_dir(lab: Lab, release: str) -> Path:
    """The lab's copy of a oneAPI release tree (made once, shared by the nodes)."""
    key = f"oneapi:{release}"
    if key not in lab.made:
        path = lab.shared / "oneapi" / release
        generate.write_tree(path, generate.oneapi_tree(release), prune=True)
        lab.made[key] = path
    return lab.made[key]


def dpkg_status_file(lab: Lab, spec: NodeSpec) -> Path:
    """The host's dpkg status plus the node's simulated packages (one file per variant)."""
    key = f"dpkg:{spec.level_zero}:{spec.compute_runtime}"
    if key not in lab.made:
        real = Path("/var/lib/dpkg/status").read_text(errors="replace")
        text = generate.dpkg_status(real, spec)
        path = lab.shared / f"dpkg-status-{hashlib.sha1(text.encode()).hexdigest()[:10]}"
        generate.write_tree(path.parent, {path.name: generate.file(text, in_place=True)})
        lab.made[key] = path
    return lab.made[key]


def render_shared(lab: Lab, count: int) -> None:
    hosts = Path("/etc/hosts").read_text(errors="replace")
    private_net = lab.private_address(1)
    tree: generate.Tree = {
        "etc_hosts": generate.file(
            generate.etc_hosts(
                hosts, lab.net, count, private_net.rsplit(".", 1)[0] if private_net else None
            ),
            in_place=True,
        ),
        "bashrc": generate.file(generate.BASHRC, in_place=True),
        "opencl_vendors/intel.icd": generate.file(generate.OPENCL_ICD),
    }
    generate.write_tree(lab.shared, tree)
    for stage in ("class", "module"):
        (lab.shared / "stage" / stage).mkdir(parents=True, exist_ok=True)


def render_node(lab: Lab, index: int, spec: NodeSpec, faults: dict[str, Any]) -> None:
    """Write node<index>'s own files for its spec and current faults (idempotent)."""
    node = lab.node_dir(index)
    name = f"node{index}"
    fs = node / "fs"
    for sub, _target in NODE_DIRS:
        (fs / sub).mkdir(parents=True, exist_ok=True)
    (fs / "opt_intel" / "oneapi").mkdir(exist_ok=True)  # mount point of the release
    render_dri(fs / "dev_dri", spec.cards)
    torch_info = generate.torch_description(
        spec, xccl="torch_no_xccl" not in faults, driver="no_driver" not in faults
    )
    lab_files: generate.Tree = {
        "node.json": generate.file(
            json.dumps(generate.node_description(name, spec), indent=2) + "\n"
        ),
        "torch.json": generate.file(json.dumps(torch_info, indent=2) + "\n"),
        "engine_faults.json": generate.file(
            json.dumps({k: v for k, v in faults.items() if k in ENGINE_FAULTS}) + "\n"
        ),
    }
    generate.write_tree(fs / "opt_intel" / ".lab", lab_files, prune=True)
    # where the simulated torch.xpu.set_device notes each process's card (xpu-smi ps):
    # ranks of any user write there; not under .lab, which this function prunes
    procs = fs / "opt_intel" / ".lab-xpu-procs"
    procs.mkdir(exist_ok=True)
    procs.chmod(0o1777)
    tools = generate.bin_tree(with_xpu_smi="missing_xpu_smi" not in faults)
    generate.write_tree(node / "bin", tools, prune=True)
    config = generate.sshd_config(
        address=lab.node_address(index),
        port=lab.port,
        host_key=node / "ssh_host_ed25519_key",
        authorized_keys=lab.authorized_keys,
        pid_file=node / "sshd.pid",
        bin_dir=node / "bin",
        clock_skew=faults.get("clock_skew"),
        extra_address=lab.private_address(index),
        users=bastion.accounts(lab.net).users if lab.private_address(index) else (),
    )
    generate.write_tree(node, {"sshd_config": generate.file(config)})


def node_spec_file(
    lab: Lab, index: int, spec: NodeSpec, faults: dict[str, Any], start_sshd: bool
) -> Path:
    """What nodeinit.py needs to start node<index>: mounts, /sys entries, sshd."""
    node = lab.node_dir(index)
    release = faults.get("old_oneapi") or spec.oneapi
    binds: list[tuple[str, str, bool]] = [
        (str(node / "fs" / sub), target, False) for sub, target in NODE_DIRS
    ]
    binds += [
        (str(oneapi_dir(lab, release)), ONEAPI_MOUNT, True),
        (str(lab.shared / "opencl_vendors"), "/etc/OpenCL/vendors", True),
        (str(dpkg_status_file(lab, spec)), "/var/lib/dpkg/status", False),
        (str(lab.shared / "etc_hosts"), "/etc/hosts", False),
    ]
    empty = lab.shared / "empty"
    empty.mkdir(parents=True, exist_ok=True)
    binds += [(str(empty), d, True) for d in HIDDEN_PACKAGE_DIRS if Path(d).is_dir()]
    bashrc = Path(os.path.expanduser("~root")) / ".bashrc"
    if bashrc.is_file():
        binds.append((str(lab.shared / "bashrc"), str(bashrc), False))
    sysfs = generate.sysfs_tree(f"node{index}", spec)
    parts = []
    for top, target in (("class", "/sys/class"), ("module", "/sys/module")):
        entries = {
            rel.split("/", 1)[1]: {"content": e.content, "mode": e.mode, "link": e.link}
            for rel, e in sysfs.items()
            if rel.startswith(top + "/")
        }
        parts.append(
            {"target": target, "stage": str(lab.shared / "stage" / top), "entries": entries}
        )
    doc = {
        "hostname": f"node{index}",
        "binds": binds,
        "sys": parts,
        "sshd": sshd.argv(lab, index) if start_sshd else None,
        "log": str(node / "node.log"),
        "holder_name": lab.holder_name(index),
    }
    path = node / "spec.json"
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def set_driver(root: Path, index: int, spec: NodeSpec, present: bool) -> None:
    """Show (or hide) the GPU driver in a running node's /sys (`root`: its /proc root)."""
    sysfs = root / "sys"
    if present:
        generate.write_tree(sysfs, generate.sysfs_tree(f"node{index}", spec))
        return
    drm = sysfs / "class/drm"
    for entry_path in drm.iterdir() if drm.is_dir() else []:
        generate.remove_path(entry_path)
    shutil.rmtree(sysfs / "module" / spec.driver, ignore_errors=True)


def wipe_node(lab: Lab, index: int) -> None:
    node = lab.node_dir(index)
    for sub in ("fs", "bin"):
        shutil.rmtree(node / sub, ignore_errors=True)
    for name in ("sshd.pid", "spec.json", "sshd_config"):
        (node / name).unlink(missing_ok=True)

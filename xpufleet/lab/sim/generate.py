"""Host-side generators of what a lab node simulates: pure functions from a NodeSpec to
file trees, plus one writer that makes a directory match a tree (idempotent).

Trees are dicts `relative path -> Entry`; the writer touches a file only when its content
differs, so `lab.up` on a running lab rewrites nothing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..profile import ONEAPI_RELEASES, NodeSpec

SIM_MODULE = Path(__file__).resolve().parent / "labsim.py"
#: the name the simulation module has on a node (in its bin dir and in the base env)
SIM_MODULE_NAME = "xpufleet_lab_sim"
FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
NODE_PATH_TAIL = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: PCI buses of the four cards in fixture 11a, then more for bigger nodes
_BUSES = ["29", "3a", "9a", "ca", "18", "42", "6c", "4b"]
ONEAPI_ROOT = "/opt/intel/oneapi"
_ROOT_VARS = {
    "compiler": "CMPLR_ROOT",
    "ccl": "CCL_ROOT",
    "mpi": "I_MPI_ROOT",
    "tbb": "TBBROOT",
    "mkl": "MKLROOT",
}


@dataclass(frozen=True)
class Entry:
    """A file (content, mode) or a symlink (target) in a generated tree."""

    content: str | None = None
    mode: int = 0o644
    link: str | None = None
    #: rewrite the existing inode (for files bind-mounted into running nodes, where a
    #: rename would leave the node looking at the old file)
    in_place: bool = False


def file(content: str, mode: int = 0o644, *, in_place: bool = False) -> Entry:
    return Entry(content=content, mode=mode, in_place=in_place)


def symlink(target: str) -> Entry:
    return Entry(link=target)


Tree = dict[str, Entry]


def lab_distribution(
    module: str, source: str, dist: str, name: str, summary: str, entry_point: str
) -> Tree:
    """A lab-only module and the .dist-info that registers its one entry point
    (`entry_point`: "[group]\\nname = module:function"), relative to site-packages."""
    return {
        f"{module}.py": file(source),
        f"{dist}/METADATA": file(
            f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\nSummary: {summary}\n"
        ),
        f"{dist}/entry_points.txt": file(entry_point + "\n"),
        f"{dist}/top_level.txt": file(f"{module}\n"),
        f"{dist}/INSTALLER": file("xpufleet-lab\n"),
    }


# -- hardware ---------------------------------------------------------------------------
def _stable_hex(*parts: object, length: int = 12) -> str:
    return hashlib.sha256("/".join(str(p) for p in parts).encode()).hexdigest()[:length]


def cards(node_name: str, spec: NodeSpec) -> list[dict[str, Any]]:
    """The node's cards: index, PCI address and ids (stable across runs)."""
    result = []
    for index in range(spec.cards):
        domain = index // len(_BUSES)
        bus = _BUSES[index % len(_BUSES)]
        soc = _stable_hex(node_name, index, length=16)
        pci = f"{spec.model.pci_device_id:04x}"
        result.append(
            {
                "index": index,
                "bdf": f"{domain:04x}:{bus}:00.0",
                "uuid": f"00000000-0000-{domain:02x}{bus}-0000-0000{pci}8086",
                "soc_uuid": f"00000000-0000-0000-{soc[:4]}-{soc[4:]}",
            }
        )
    return result


def node_description(node_name: str, spec: NodeSpec) -> dict[str, Any]:
    """/opt/intel/.lab/node.json: marks the node as a lab node and lists what is simulated.

    The simulated tools read the hardware from here; faults are deliberately absent
    (they exist only at the OS level).
    """
    model = spec.model
    return {
        "lab": True,
        "node": node_name,
        "simulated": [
            "xpu-smi",
            "sycl-ls",
            "fi_info",
            "/sys/class/drm",
            "/dev/dri",
            f"/sys/module/{spec.driver}",
            ONEAPI_ROOT,
            "/etc/OpenCL/vendors/intel.icd",
            "dpkg:level-zero,intel-level-zero-gpu,intel-opencl-icd",
            "torch.xpu",
            "torch.distributed.is_xccl_available",
        ],
        "hardware": {
            "model": model.key,
            "name": model.name,
            "pci_device_id": f"0x{model.pci_device_id:04x}",
            "tiles_per_card": model.tiles,
            "memory_physical_mib": model.memory_gb * 1024,
            "tile_memory_mb": model.tile_memory_mb,
            "eus_per_tile": model.eus_per_tile,
            "hierarchy": spec.hierarchy,
            "driver": spec.driver,
            "driver_version": spec.driver_version,
            "xpu_smi": spec.xpu_smi,
            "level_zero": spec.level_zero,
            "compute_runtime": spec.compute_runtime,
            "cards": cards(node_name, spec),
        },
    }


def torch_description(spec: NodeSpec, *, xccl: bool, driver: bool = True) -> dict[str, Any]:
    """/opt/intel/.lab/torch.json: read by the base environment's torch patch.

    Without a GPU driver torch sees no XPU, as on a real node."""
    build = spec.compute_runtime.split(".")
    driver_version = f"1.3.{build[2]}+{build[3]}" if len(build) >= 4 else "1.3.0+0"
    return {
        "xpu_available": driver,
        "xccl_available": xccl,
        "driver_version": driver_version,
        # torch.version.xpu of an XPU build: the SYCL compiler it was built with
        # (__SYCL_COMPILER_VERSION, e.g. 20250101 for oneAPI 2025.0); CPU builds have None
        "xpu_version": "20250101",
        "device_count_flat": spec.cards * spec.model.tiles,
        "device_name": spec.model.name,
        "tile_memory_mb": spec.model.tile_memory_mb,
    }


def sysfs_tree(node_name: str, spec: NodeSpec) -> Tree:
    """Simulated `class/drm/...` and `module/<driver>/...` entries (relative to /sys)."""
    tree: Tree = {}
    model = spec.model
    for card in cards(node_name, spec):
        n = card["index"]
        base = f"class/drm/card{n}"
        dev = f"{base}/device"
        pci_id = f"8086:{model.pci_device_id:04X}"
        tree[f"{base}/dev"] = file(f"226:{n}\n")
        tree[f"{base}/uevent"] = file(
            f"MAJOR=226\nMINOR={n}\nDEVNAME=dri/card{n}\nDEVTYPE=drm_minor\n"
        )
        tree[f"{dev}/vendor"] = file("0x8086\n")
        tree[f"{dev}/device"] = file(f"0x{model.pci_device_id:04x}\n")
        tree[f"{dev}/subsystem_vendor"] = file("0x8086\n")
        tree[f"{dev}/subsystem_device"] = file("0x0000\n")
        tree[f"{dev}/class"] = file("0x038000\n")
        tree[f"{dev}/uevent"] = file(
            f"DRIVER={spec.driver}\nPCI_CLASS=38000\nPCI_ID={pci_id}\n"
            f"PCI_SUBSYS_ID=8086:0000\nPCI_SLOT_NAME={card['bdf']}\n"
            f"MODALIAS=pci:v00008086d0000{model.pci_device_id:04X}sv00008086sd00000000bc03sc80i00\n"
        )
        tree[f"{dev}/driver"] = symlink(f"../../../../bus/pci/drivers/{spec.driver}")
        for tile in range(model.tiles):
            if spec.driver == "i915":
                tree[f"{base}/gt/gt{tile}/id"] = file(f"{tile}\n")
            else:
                tree[f"{dev}/tile{tile}/gt{tile * 2}/id"] = file(f"{tile * 2}\n")
        minor = 128 + n
        tree[f"class/drm/renderD{minor}/dev"] = file(f"226:{minor}\n")
        tree[f"class/drm/renderD{minor}/device"] = symlink(f"../card{n}/device")
    module = f"module/{spec.driver}"
    tree[f"{module}/version"] = file(f"{spec.driver_version}\n")
    tree[f"{module}/initstate"] = file("live\n")
    tree[f"{module}/refcnt"] = file(f"{spec.cards}\n")
    return tree


# -- oneAPI -----------------------------------------------------------------------------
def oneapi_tree(release: str) -> Tree:
    """An /opt/intel/oneapi tree: setvars.sh, <comp>/<ver>/env/vars.sh, <comp>/latest,
    and the unified-layout <release>/oneapi-vars.sh from 2024.0 on (REFERENCE §4)."""
    components = ONEAPI_RELEASES[release]
    tree: Tree = {}
    for comp, version in components.items():
        root = f"{ONEAPI_ROOT}/{comp}/{version}"
        var = _ROOT_VARS[comp]
        tree[f"{comp}/{version}/env/vars.sh"] = file(
            f"# {comp} {version} environment (simulated by the xpufleet lab)\n"
            f"{var}={root}; export {var}\n"
            f'PATH="{root}/bin${{PATH:+:$PATH}}"; export PATH\n'
            f'LD_LIBRARY_PATH="{root}/lib${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}"; '
            "export LD_LIBRARY_PATH\n"
        )
        tree[f"{comp}/{version}/lib/.keep"] = file("")
        tree[f"{comp}/latest"] = symlink(version)
    banner = "".join(f'echo ":: {comp} -- latest"\n' for comp in sorted(components))
    sources = "".join(
        f'. "$ONEAPI_ROOT/{comp}/latest/env/vars.sh"\n' for comp in sorted(components)
    )
    tree["setvars.sh"] = file(
        "# Intel oneAPI environment (simulated by the xpufleet lab)\n"
        'if [ "${SETVARS_COMPLETED:-}" = "1" ] && [ "${1:-}" != "--force" ]; then\n'
        '  echo ":: WARNING: setvars.sh has already been run. Skipping re-execution."\n'
        "  echo \"   To force a re-execution of setvars.sh, use the '--force' option.\"\n"
        "  return 0 2>/dev/null || exit 0\n"
        "fi\n"
        'printf ":: initializing oneAPI environment ...\\n"\n'
        'printf "   args: Using \\"\\$@\\" for setvars.sh arguments: %s\\n" "$*"\n'
        f"ONEAPI_ROOT={ONEAPI_ROOT}; export ONEAPI_ROOT\n"
        f"{sources}"
        f"{banner}"
        'printf ":: oneAPI environment initialized ::\\n"\n'
        "SETVARS_COMPLETED=1; export SETVARS_COMPLETED\n",
        0o755,
    )
    if tuple(int(p) for p in release.split(".")) >= (2024, 0):
        tree[f"{release}/oneapi-vars.sh"] = file(
            f"# oneAPI {release} unified layout (simulated by the xpufleet lab)\n"
            f'. "{ONEAPI_ROOT}/setvars.sh" "$@"\n',
            0o755,
        )
    return tree


# -- packages ---------------------------------------------------------------------------
def dpkg_stanzas(spec: NodeSpec) -> str:
    """Level Zero / OpenCL package records in /var/lib/dpkg/status format (fixture 12b).

    Depends lists only libc6 so that apt on a node does not see unmet dependencies.
    """
    runtime = spec.compute_runtime
    build = ".".join(runtime.split(".")[2:])
    suffix = "-881~22.04"
    packages = [
        (
            "level-zero",
            spec.level_zero,
            "level-zero",
            "oneAPI Level Zero loader.\n The Level Zero loader dispatches calls to the drivers.",
        ),
        (
            "intel-level-zero-gpu",
            f"1.3.{build}{suffix}",
            "intel-compute-runtime",
            "Intel(R) Graphics Compute Runtime for oneAPI Level Zero.\n"
            " Level Zero is the primary low-level interface for language and runtime\n"
            " libraries.",
        ),
        (
            "intel-opencl-icd",
            f"{runtime}{suffix}",
            "intel-compute-runtime",
            "Intel graphics compute runtime for OpenCL.\n"
            " The Intel(R) Graphics Compute Runtime for OpenCL(TM) is an open source\n"
            " project to converge Intel's development efforts on OpenCL(TM) compute\n"
            " stacks supporting the GEN graphics hardware architecture.",
        ),
    ]
    stanzas = []
    for name, version, source, description in packages:
        stanzas.append(
            f"Package: {name}\n"
            "Status: install ok installed\n"
            "Priority: optional\n"
            "Section: libs\n"
            "Installed-Size: 28728\n"
            "Maintainer: Intel Graphics Team <linux-graphics@intel.com>\n"
            "Architecture: amd64\n"
            f"Source: {source}\n"
            f"Version: {version}\n"
            "Depends: libc6 (>= 2.34)\n"
            f"Description: {description}\n"
            "Homepage: https://github.com/oneapi-src/level-zero\n"
        )
    return "\n".join(stanzas)


def dpkg_status(real_status: str, spec: NodeSpec) -> str:
    """The host's dpkg status with the simulated packages appended (replacing any real
    record of the same name)."""
    simulated = {"level-zero", "intel-level-zero-gpu", "intel-opencl-icd"}
    kept = []
    for record in real_status.strip("\n").split("\n\n"):
        first = record.split("\n", 1)[0]
        if first.startswith("Package: ") and first[len("Package: ") :].strip() in simulated:
            continue
        if record.strip():
            kept.append(record.strip("\n"))
    return "\n\n".join(kept + [dpkg_stanzas(spec).strip("\n")]) + "\n"


# -- node bin, sshd, shell --------------------------------------------------------------
def bin_tree(*, with_xpu_smi: bool) -> Tree:
    """The node's own bin dir: simulated `xpu-smi`, `sycl-ls` and libfabric's `fi_info`
    (+ their module)."""
    tree: Tree = {f"{SIM_MODULE_NAME}.py": file(SIM_MODULE.read_text())}
    launcher = (
        "#!/usr/bin/python3 -sE\n"
        "# Simulated by the xpufleet lab (no Intel GPU here); see {module}.py\n"
        "import sys\n\nfrom {module} import main\n\nsys.exit(main({tool!r}))\n"
    )
    tools = ["sycl-ls", "fi_info"] + (["xpu-smi"] if with_xpu_smi else [])
    for tool in tools:
        tree[tool] = file(launcher.format(module=SIM_MODULE_NAME, tool=tool), 0o755)
    return tree


#: lab nodes are offline like many Max clusters' compute nodes: their pip reads no
#: configuration (the machine's index and find-links settings) and no index at all, so
#: only what provision pushes can be installed (see also layout.HIDDEN_PACKAGE_DIRS)
OFFLINE_PIP_ENV = ("PIP_NO_INDEX=1", "PIP_CONFIG_FILE=/dev/null")


def sshd_config(
    *,
    address: str,
    port: int,
    host_key: Path,
    authorized_keys: Path,
    pid_file: Path,
    bin_dir: Path,
    clock_skew: int | None,
    extra_address: str | None = None,
    users: tuple[str, ...] = (),
) -> str:
    """One node's sshd_config: its own address, key and PATH; libfaketime for clock skew;
    pip offline (OFFLINE_PIP_ENV).

    `extra_address`: the node's private address (reached through the lab's bastion);
    `users`: the lab's non-root accounts, whose keys are in their own homes."""
    env = [f"PATH={bin_dir}:{NODE_PATH_TAIL}", *OFFLINE_PIP_ENV]
    if clock_skew:
        env += [
            f"LD_PRELOAD={FAKETIME_LIB}",
            f"FAKETIME={clock_skew:+d}",
            "FAKETIME_DONT_FAKE_MONOTONIC=1",
        ]
    return (
        "# xpufleet lab node (generated by `invoke lab.up`; do not edit)\n"
        f"ListenAddress {address}:{port}\n"
        + (f"ListenAddress {extra_address}:{port}\n" if extra_address else "")
        + f"HostKey {host_key}\n"
        f"AuthorizedKeysFile {authorized_keys}\n"
        f"PidFile {pid_file}\n"
        "PermitRootLogin prohibit-password\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UsePAM no\n"
        "StrictModes no\n"
        "UseDNS no\n"
        "PrintMotd no\n"
        "PrintLastLog no\n"
        "X11Forwarding no\n"
        "MaxStartups 512\n"
        "MaxSessions 256\n"
        "LoginGraceTime 30\n"
        f"SetEnv {' '.join(env)}\n"
        "Subsystem sftp internal-sftp\n"
        + (
            f"Match User {','.join(users)}\n  AuthorizedKeysFile .ssh/authorized_keys\n"
            if users
            else ""
        )
    )


BASHRC = (
    "# ~/.bashrc of an xpufleet lab node (bind-mounted over the host's inside the node).\n"
    "# Intentionally minimal: the node's PATH comes from its sshd (SetEnv), so the host\n"
    "# user's shell setup (pyenv shims, ...) does not leak into the node.\n"
)


def etc_hosts(real_hosts: str, prefix: str, count: int, private: str | None = None) -> str:
    """The host's /etc/hosts plus every lab node, so node names resolve on the nodes
    (to both addresses when the node also has one behind the bastion)."""
    lines = [real_hosts.rstrip("\n"), "", "# xpufleet lab nodes"]
    lines += [f"{prefix}.{i}\tnode{i}" for i in range(1, count + 1)]
    if private:
        lines += [f"{private}.{i}\tnode{i}" for i in range(1, count + 1)]
    return "\n".join(lines) + "\n"


OPENCL_ICD = "/usr/lib/x86_64-linux-gnu/intel-opencl/libigdrcl.so\n"


# -- writer -----------------------------------------------------------------------------
def write_tree(root: Path, tree: Tree, *, prune: bool = False) -> int:
    """Make `root` hold `tree`; returns how many entries changed. With `prune`, entries
    under root that are not in the tree are removed (for lab-owned trees only)."""
    changed = 0
    root.mkdir(parents=True, exist_ok=True)
    for rel, entry in sorted(tree.items()):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if entry.link is not None:
            if path.is_symlink() and os.readlink(path) == entry.link:
                continue
            remove_path(path)
            os.symlink(entry.link, path)
            changed += 1
            continue
        assert entry.content is not None
        data = entry.content.encode()
        if path.is_file() and not path.is_symlink() and path.read_bytes() == data:
            if (path.stat().st_mode & 0o7777) != entry.mode:
                path.chmod(entry.mode)
                changed += 1
            continue
        if entry.in_place and path.is_file() and not path.is_symlink():
            with path.open("r+b") as fh:
                fh.write(data)
                fh.truncate()
            path.chmod(entry.mode)
            changed += 1
            continue
        remove_path(path)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_bytes(data)
        tmp.chmod(entry.mode)
        os.replace(tmp, path)
        changed += 1
    if prune:
        changed += _prune(root, tree)
    return changed


def remove_path(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _prune(root: Path, tree: Tree) -> int:
    wanted = set(tree)
    parents = {str(Path(rel).parent) for rel in tree}
    parents |= {str(p) for rel in tree for p in Path(rel).parents}
    removed = 0
    for dirpath, dirnames, filenames in os.walk(root, topdown=True):
        rel_dir = os.path.relpath(dirpath, root)
        for name in list(dirnames):
            rel = os.path.normpath(os.path.join(rel_dir, name))
            full = Path(dirpath) / name
            if rel in wanted and full.is_symlink():
                dirnames.remove(name)
            elif rel not in parents:
                remove_path(full)
                dirnames.remove(name)
                removed += 1
        for name in filenames:
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if rel not in wanted:
                (Path(dirpath) / name).unlink()
                removed += 1
    return removed

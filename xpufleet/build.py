"""`invoke build`: build the pinned wheels on a build host and bring them home.

For each recipe (xpufleet/roles/build/recipes.yaml; versions and commits are variables in
xpufleet/roles/build/defaults.yaml, overridable from the inventory): render its Jinja2 script
into `<build_dir>/<recipe>/build.sh` on the host, ship a local source tree if the
recipe has one (tar, streamed), run the script with its output in
`<build_dir>/<recipe>/build.log` (a copy lands in `runs/build-<time>/`), fetch the
wheel back into files/wheels/ (sha256 checked against the host's own hash) and record
it in files/wheels/manifest.json: name, version, sha256, source, commit, build host,
date. Rendering happens before the host is touched, so a bad template exits 2.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import shell
from .config import PACKAGE_PARENT, PROJECT_ROOT
from .errors import HostError, InputError
from .executor import SessionPool
from .host import Host
from .provision.manifest import (
    MANIFEST_NAME,
    WheelEntry,
    entry_for_file,
    load_manifest,
    parse_wheel_filename,
)
from .provision.roles import (
    ROLES_DIR,
    RoleContext,
    load_role,
)
from .provision.transfer import fetch_file
from .requirements import parse_requirement
from .results import CHANGED, FAILED, HostReport, Result, TaskReport
from .transport import Session, SSHOptions
from .variables import load_mapping, render_value

BUILD_ROLE = "build"
RUNBOOK = "docs/runbooks/provision.md#build-failed"
#: never shipped with a local source tree
EXCLUDE = {"__pycache__", ".git", "build", "dist", ".eggs", ".pytest_cache", ".ruff_cache"}


@dataclass(frozen=True)
class Recipe:
    """One rendered recipe: its script and what the manifest will say about its wheel."""

    name: str
    script: str
    source: str
    ref: str = ""
    local: Path | None = None
    import_name: str = ""
    features: tuple[str, ...] = ()
    no_deps: bool = True
    #: extras resolved into the lock with the wheel (SGLang: all_xpu)
    extras: tuple[str, ...] = ()
    #: a wheel the operator names instead of a build (Triton `prebuilt` mode)
    prebuilt: Path | None = None


@dataclass
class BuildPlan:
    host: Host
    build_dir: str
    recipes: list[Recipe] = field(default_factory=list)


def load_recipe_specs(roles_dir: Path = ROLES_DIR) -> dict[str, dict[str, Any]]:
    return load_mapping(roles_dir / BUILD_ROLE / "recipes.yaml", "a mapping name -> recipe")


def plan_build(
    host: Host,
    names: list[str] | None = None,
    *,
    local_source: Path | None = None,
    roles_dir: Path = ROLES_DIR,
) -> BuildPlan:
    """Render the recipes for `host` (pure, no SSH). `local_source`: build that tree instead."""
    role = load_role(BUILD_ROLE, roles_dir)
    # recipes use the provision roles' variables too (oneapi_env_file, venv ...)
    merged = dict(host.var.values)
    specs = load_recipe_specs(roles_dir)
    ctx = RoleContext(role, host, merged, load_manifest(Path("/nonexistent")))
    build_dir = str(merged["build_dir"]).rstrip("/")
    plan = BuildPlan(host, build_dir)
    if local_source is not None:
        src = local_source.resolve()
        if not (src / "pyproject.toml").exists() and not (src / "setup.py").exists():
            raise InputError(f"{src} has no pyproject.toml or setup.py", key="source")
        specs = {src.name: {"template": "local.sh.j2", "local": str(src), "import_name": ""}}
        names = [src.name]
    chosen = list(names or merged["build_recipes"] or [])
    if not chosen:
        raise InputError("no recipes to build (build_recipes is empty)", key="build_recipes")
    recipes_file = str(roles_dir / BUILD_ROLE / "recipes.yaml")
    for name in chosen:
        if name not in specs:
            raise InputError(
                f"unknown recipe '{name}'; known: {', '.join(sorted(specs))}",
                file=recipes_file,
                key="recipe",
            )
        spec = {
            k: render_value(v, merged, f"{name}.{k}", recipes_file) for k, v in specs[name].items()
        }
        prebuilt = _prebuilt(name, spec, merged)
        if prebuilt is not None:
            plan.recipes.append(
                Recipe(
                    name=name,
                    script="",
                    source=str(prebuilt),
                    import_name=str(spec.get("import_name") or ""),
                    features=tuple(spec.get("features") or ()),
                    extras=tuple(spec.get("extras") or ()),
                    prebuilt=prebuilt,
                )
            )
            continue
        local = None
        if spec.get("local"):
            local = Path(str(spec["local"]))
            if not local.is_absolute():
                # the project's own trees (the lab's stand-in) ship inside the package
                here = PROJECT_ROOT / local
                local = here if here.is_dir() else PACKAGE_PARENT / local
            if not local.is_dir():
                raise InputError(f"local source {local} of recipe {name} does not exist", key=name)
        work = f"{build_dir}/{name}"
        script = ctx.render(
            str(spec["template"]),
            recipe=name,
            source=str(local or spec.get("source", "")),
            ref=str(spec.get("ref", "")),
            work_dir=work,
            out_dir=f"{work}/dist",
        )
        plan.recipes.append(
            Recipe(
                name=name,
                script=script,
                source=str(spec.get("source") or _shown(local)),
                ref=str(spec.get("ref", "")),
                local=local,
                import_name=str(spec.get("import_name") or ""),
                features=tuple(spec.get("features") or ()),
                no_deps=bool(spec.get("no_deps", True)),
                extras=tuple(spec.get("extras") or ()),
            )
        )
    return plan


def _prebuilt(name: str, spec: dict[str, Any], merged: dict[str, Any]) -> Path | None:
    """The operator's wheel for a recipe in `prebuilt` mode (`mode_var` = "prebuilt"),
    checked here on the control node; None when the recipe builds from source."""
    mode_var = spec.get("mode_var")
    if not mode_var:
        return None
    mode = str(merged.get(str(mode_var), "source"))
    if mode not in ("source", "prebuilt"):
        raise InputError(f"{mode_var} must be 'source' or 'prebuilt', got {mode!r}", key=mode_var)
    if mode == "source":
        return None
    wheel_var = str(spec.get("wheel_var"))
    text = str(merged.get(wheel_var) or "")
    if not text:
        raise InputError(
            f"{mode_var} is 'prebuilt' but {wheel_var} names no wheel file", key=wheel_var
        )
    path = Path(text.removeprefix("file://")).expanduser()
    path = path if path.is_absolute() else PROJECT_ROOT / path
    if not path.is_file():
        raise InputError(f"{wheel_var}: no such wheel file {path}", key=wheel_var)
    parse_wheel_filename(path.name)  # a wheel by name, or bad input
    return path


def add_prebuilt(recipe: Recipe, wheels_dir: Path) -> Result:
    """Copy the operator's wheel into files/wheels/ and record it like a built one."""
    assert recipe.prebuilt is not None
    dest = wheels_dir / recipe.prebuilt.name
    wheels_dir.mkdir(parents=True, exist_ok=True)
    if recipe.prebuilt.resolve() != dest.resolve():
        shutil.copyfile(recipe.prebuilt, dest)
    version = parse_wheel_filename(dest.name)[1]
    commit = version.split("+git", 1)[1] if "+git" in version else ""
    entry = entry_for_file(
        dest,
        source=str(recipe.prebuilt),
        commit=commit,
        build_host="prebuilt",
        import_name=recipe.import_name,
        features=recipe.features,
        extras=recipe.extras,
    )
    return _record(
        wheels_dir,
        recipe,
        entry,
        f"{dest.name} (prebuilt {recipe.prebuilt}, {entry.size / 1e6:.1f} MB, sha256 "
        f"{entry.sha256[:12]})",
    )


def _record(wheels_dir: Path, recipe: Recipe, entry: WheelEntry, message: str) -> Result:
    """Put `entry` in the manifest (replacing the same distribution's older file); the
    recipe's `changed` result saying `message`."""
    manifest = load_manifest(wheels_dir / MANIFEST_NAME)
    old = next((w for w in manifest.wheels if w.key == entry.key), None)
    manifest.upsert(entry)
    manifest.save()
    if old and old.filename != entry.filename:
        (wheels_dir / old.filename).unlink(missing_ok=True)
    return Result(f"build.{recipe.name}", CHANGED, message, data={"wheel": entry.to_json()})


def _shown(path: Path | None) -> str:
    """A local source as the manifest records it: relative to the project when inside it."""
    if path is None:
        return ""
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def source_tarball(path: Path) -> bytes:
    """A deterministic tar of a source tree (sorted, no mtimes/owners, no build output)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for item in sorted(path.rglob("*")):
            rel = item.relative_to(path)
            if any(part in EXCLUDE or part.endswith(".egg-info") for part in rel.parts):
                continue
            info = tar.gettarinfo(str(item), arcname=str(rel))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if item.is_file():
                with item.open("rb") as fh:
                    tar.addfile(info, fh)
            elif item.is_dir():
                tar.addfile(info)
    return buf.getvalue()


def build_one(
    session: Session,
    plan: BuildPlan,
    recipe: Recipe,
    wheels_dir: Path,
    logs_dir: Path,
    timeout: float | None,
) -> Result:
    """Run one recipe on the host and bring its wheel home; a Result either way."""
    host = session.host.name
    work = f"{plan.build_dir}/{recipe.name}"
    q = shell.quote
    started = time.monotonic()
    session.run(
        f"mkdir -p {q(work)}/dist && rm -f {q(work)}/dist/*.whl {q(work)}/commit.txt "
        f"{q(work)}/requires.txt "
        f"&& cat > {q(work)}/build.sh && chmod 755 {q(work)}/build.sh",
        stdin=recipe.script,
    )
    commit = recipe.ref
    if recipe.local is not None:
        tarball = source_tarball(recipe.local)
        commit = "tree-sha256:" + hashlib.sha256(tarball).hexdigest()[:16]
        session.stream_to(
            io.BytesIO(tarball),
            f"rm -rf {q(work)}/src && mkdir -p {q(work)}/src && tar -x -C {q(work)}/src",
        )
    log = f"{work}/build.log"
    run = session.run(f"bash {q(work)}/build.sh > {q(log)} 2>&1", timeout=timeout, check=False)
    logs_dir.mkdir(parents=True, exist_ok=True)
    local_log = logs_dir / f"{host}-{recipe.name}.log"
    try:
        fetch_file(session, log, local_log)
    except HostError:
        pass
    if run.exit_status != 0:
        tail = session.run(f"tail -n 15 {q(log)}", check=False).stdout
        lines = [ln for ln in tail.splitlines() if ln.strip()][-5:]
        return Result(
            f"build.{recipe.name}",
            FAILED,
            f"build script exited {run.exit_status} (log {host}:{log}, copy {local_log}): "
            + " | ".join(lines),
            RUNBOOK,
        )
    found = session.run(f"ls -1 {q(work)}/dist/ | grep '\\.whl$'", check=False).stdout.split()
    if len(found) != 1:
        return Result(
            f"build.{recipe.name}",
            FAILED,
            f"expected one wheel in {work}/dist, found {len(found)}: {found}",
            RUNBOOK,
        )
    filename = found[0]
    recorded = session.run(f"cat {q(work)}/commit.txt 2>/dev/null; true").stdout.strip()
    commit = recorded or commit
    # requirement lines the wheel's metadata lacks (the vLLM recipe writes requires.txt)
    requires = session.run(f"cat {q(work)}/requires.txt 2>/dev/null; true").stdout
    dest = wheels_dir / filename
    sha = fetch_file(session, f"{work}/dist/{filename}", dest)
    entry = entry_for_file(
        dest,
        source=recipe.source,
        commit=commit,
        build_host=host,
        no_deps=recipe.no_deps,
        import_name=recipe.import_name,
        features=recipe.features,
        extras=recipe.extras,
        requires=tuple(
            ln.strip() for ln in requires.splitlines() if ln.strip() and not ln.startswith("#")
        ),
    )
    took = time.monotonic() - started
    return _record(
        wheels_dir,
        recipe,
        entry,
        f"{filename} ({entry.size / 1e6:.1f} MB, sha256 {sha[:12]}, commit {commit}) "
        f"in {took:.0f}s; log {local_log}",
    )


def run_build(
    plan: BuildPlan,
    ssh_options: SSHOptions,
    wheels_dir: Path,
    logs_dir: Path,
    *,
    timeout: float | None = None,
) -> TaskReport:
    """Build every recipe of the plan in order on its host; stop at the first failure."""
    report = TaskReport("build")
    host_report = HostReport()
    report.hosts[plan.host.name] = host_report

    def work(session: Session) -> list[Result]:
        results: list[Result] = []
        for recipe in plan.recipes:
            try:
                if recipe.prebuilt is not None:
                    result = add_prebuilt(recipe, wheels_dir)
                else:
                    result = build_one(session, plan, recipe, wheels_dir, logs_dir, timeout)
            except HostError as exc:
                result = Result(f"build.{recipe.name}", FAILED, exc.message, RUNBOOK)
            results.append(result)
            if result.status == FAILED:
                break
        return results

    with SessionPool([plan.host], ssh_options, 1) as pool:
        outcome = pool.map(work)[plan.host.name]
    host_report.reachable = outcome.reachable
    if outcome.error is not None:
        host_report.error = outcome.error.message
        host_report.error_kind = outcome.error.kind
    else:
        host_report.results = outcome.value or []
    return report


def lock_host_vars(host: Host) -> dict[str, Any]:
    """The build host's variables the lock reads (its nodes' python, base, pins, engine)."""
    v = host.var
    return {
        "pip_packages": engine_requirements(v.pip_packages, v.engine, v.ray_requirement),
        "python": v.python,
        "base_site_packages": v.base_site_packages,
        "lock_constraints": v.lock_constraints,
        "engine": v.engine,
    }


def engine_requirements(pip_packages: list[str], engine: str, ray_requirement: str) -> list[str]:
    """Pure: the lock's top-level requirements. With engine vllm, Ray joins them (the
    fork's requirements-xpu.txt asks `ray >= 2.9`; `ray_requirement` can pin it), so the
    closed environment holds the Ray `invoke launch --engine vllm` starts."""
    names = {parse_requirement(p).name.lower() for p in pip_packages}
    if engine == "vllm" and ray_requirement:
        ray = parse_requirement(ray_requirement, where="ray_requirement")
        if ray.name.lower() not in names:
            return [*pip_packages, ray_requirement]
    return list(pip_packages)


def engine_problem(manifest_wheels: list[str], engine: str) -> str | None:
    """Pure: why the built wheels cannot serve `engine`, or None (vLLM needs its wheel:
    the lock resolves its requirements, Ray among them, from it)."""
    if engine == "vllm" and "vllm" not in {w.lower() for w in manifest_wheels}:
        return (
            "engine is vllm but files/wheels has no vllm wheel: `invoke build` with the "
            "vllm recipe first (the fork zhuyuhua-v/vllm@yuhua/deepseek, "
            "VLLM_TARGET_DEVICE=xpu)"
        )
    return None


def run_lock(host: Host, wheels_dir: Path) -> Result:
    """Resolve, download and record the closed environment of files/wheels/ (a Result)."""
    from .errors import LockFailed
    from .provision.wheelhouse import RUNBOOK as LOCK_RUNBOOK
    from .provision.wheelhouse import lock_wheelhouse

    manifest = load_manifest(wheels_dir / MANIFEST_NAME)
    if not manifest.wheels:
        return Result("build.lock", FAILED, f"no built wheels in {manifest.path}", RUNBOOK)
    v = lock_host_vars(host)
    problem = engine_problem([w.name for w in manifest.wheels], v["engine"])
    if problem:
        return Result("build.lock", FAILED, problem, RUNBOOK)
    started = time.monotonic()
    try:
        lock_wheelhouse(
            manifest,
            v["pip_packages"],
            python=v["python"],
            base_site_packages=v["base_site_packages"],
            extra_constraints=v["lock_constraints"],
        )
    except LockFailed as exc:
        return Result("build.lock", FAILED, str(exc), LOCK_RUNBOOK)
    return Result(
        "build.lock",
        CHANGED,
        f"{len(manifest.wheels)} built + {len(manifest.locked)} locked wheels, "
        f"{manifest.size / 1e6:.1f} MB in {wheels_dir}, resolved by pip in "
        f"{time.monotonic() - started:.0f}s",
        data={"locked": len(manifest.locked), "bytes": manifest.size},
    )

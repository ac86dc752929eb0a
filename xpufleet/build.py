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
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import shell
from .config import PACKAGE_PARENT, PROJECT_ROOT
from .errors import HostError, InputError
from .executor import SessionPool
from .host import Host
from .provision.manifest import MANIFEST_NAME, entry_for_file, load_manifest
from .provision.roles import (
    ROLE_ORDER,
    ROLES_DIR,
    RoleContext,
    load_role,
    merged_vars,
    render_value,
)
from .provision.transfer import fetch_file
from .results import CHANGED, FAILED, HostReport, Result, TaskReport
from .transport import Session, SSHOptions

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


@dataclass
class BuildPlan:
    host: Host
    build_dir: str
    recipes: list[Recipe] = field(default_factory=list)


def load_recipe_specs(roles_dir: Path = ROLES_DIR) -> dict[str, dict[str, Any]]:
    path = roles_dir / BUILD_ROLE / "recipes.yaml"
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputError(
            f"YAML error: {exc}", file=str(path), line=mark.line + 1 if mark else None
        ) from exc
    if not isinstance(doc, dict):
        raise InputError("recipes must be a mapping name -> recipe", file=str(path))
    return doc


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
    merged = merged_vars(host, [load_role(n, roles_dir) for n in ROLE_ORDER] + [role])
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
            )
        )
    return plan


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
    )
    manifest = load_manifest(wheels_dir / MANIFEST_NAME)
    old = next((w for w in manifest.wheels if w.key == entry.key), None)
    manifest.upsert(entry)
    manifest.save()
    if old and old.filename != filename:
        (wheels_dir / old.filename).unlink(missing_ok=True)
    took = time.monotonic() - started
    return Result(
        f"build.{recipe.name}",
        CHANGED,
        f"{filename} ({entry.size / 1e6:.1f} MB, sha256 {sha[:12]}, commit {commit}) "
        f"in {took:.0f}s; log {local_log}",
        data={"wheel": entry.to_json()},
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

"""Every runbook link xpufleet can print resolves to a real heading of a real runbook.

Links are found in all of xpufleet/ and roles/: string literals `docs/runbooks/F.md#a`
(Python, YAML, templates, shell) and `xpufleet.runbooks.link(file, heading)` calls. A
link built at run time (from a registry, say) is proven through the module that builds
it: that module, or a package above it, exposes `runbook_links()` returning every link
it can produce, and each of those is checked. A run-time link without such a hook
fails the test. The runbooks' own relative links (index.md first) are checked too.
"""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from xpufleet.runbooks import anchors, anchors_of_text, link, slug

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK_DIR = "docs/runbooks"
SCANNED = ("xpufleet", "roles")
TEXT_SUFFIXES = {".py", ".yaml", ".yml", ".j2", ".sh", ".md", ".txt", ".json", ".cfg", ".toml"}
LITERAL = re.compile(r"docs/runbooks/([A-Za-z0-9_.-]+\.md)(?:#([A-Za-z0-9_-]*))?")
MD_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
INDEX_TARGETS = ("doctor.md", "launch.md", "provision.md", "upgrade.md")
DYNAMIC = "anchor built at run time"
#: the link builder itself: what it returns is checked at each call site instead
NOT_SCANNED = {"xpufleet/runbooks.py"}


@dataclass(frozen=True)
class Found:
    where: str  # file:line
    target: str | None  # docs/runbooks/F.md#anchor, None when it cannot be known statically
    note: str = ""


# --------------------------------------------------------------------------- scanning


def _link_aliases(tree: ast.Module) -> tuple[set[str], set[str]]:
    """Names bound to runbooks.link, and names bound to the runbooks module itself."""
    funcs, modules = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            for alias in node.names:
                if module.endswith("runbooks") and alias.name == "link":
                    funcs.add(alias.asname or alias.name)
                elif alias.name == "runbooks":
                    modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.endswith(".runbooks") or alias.name == "runbooks":
                    modules.add(alias.asname or alias.name)
    return funcs, modules


def _literal_links(text: str, where: str) -> list[Found]:
    found = []
    for match in LITERAL.finditer(text):
        target = f"{RUNBOOK_DIR}/{match.group(1)}"
        rest = text[match.end() : match.end() + 1]
        if match.group(2) == "" or (match.group(2) is not None and rest == "{"):
            found.append(Found(where, None, DYNAMIC))
        else:
            found.append(Found(where, target + (f"#{match.group(2)}" if match.group(2) else "")))
    return found


HOLE = "\x00"  # stands for a value only known at run time
UNRESOLVED = "docs/runbooks/" + HOLE


def _string_constants(tree: ast.Module) -> dict[str, str]:
    """Module-level NAME = "..." strings, to resolve f"{RUNBOOK}#anchor" and RUNBOOK + "#a"."""
    consts: dict[str, str] = {}
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        elif isinstance(node, ast.Assign):
            value = node.value
        else:
            continue
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            consts.update({t.id: value.value for t in targets if isinstance(t, ast.Name)})
    return consts


def _render(node: ast.expr, consts: dict[str, str]) -> str:
    """An f-string or `+` chain as text, HOLE for each run-time value; a name that looks
    like a runbook path and is not a local constant counts as an unknown runbook."""
    parts: list[ast.expr] = []

    def flatten(n: ast.expr) -> None:
        if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Add):
            flatten(n.left)
            flatten(n.right)
        elif isinstance(n, ast.JoinedStr):
            parts.extend(n.values)
        else:
            parts.append(n)

    flatten(node)
    text = []
    for part in parts:
        inner = part.value if isinstance(part, ast.FormattedValue) else part
        if isinstance(inner, ast.Constant) and isinstance(inner.value, str):
            text.append(inner.value)
        elif isinstance(inner, ast.Name) and inner.id in consts:
            text.append(consts[inner.id])
        elif isinstance(inner, ast.Name) and "runbook" in inner.id.lower():
            text.append(UNRESOLVED + ".md")
        else:
            text.append(HOLE)
    return "".join(text)


def _rendered_links(text: str, where: str) -> list[Found]:
    found = []
    if re.search(re.escape(UNRESOLVED) + r"[^#\s]*#", text):
        found.append(Found(where, None, DYNAMIC))  # the runbook file itself is a run-time value
    for match in LITERAL.finditer(text):
        rest = text[match.end() : match.end() + 1]
        if match.group(2) == "" or rest == HOLE:
            found.append(Found(where, None, DYNAMIC))
        else:
            target = f"{RUNBOOK_DIR}/{match.group(1)}"
            found.append(Found(where, target + (f"#{match.group(2)}" if match.group(2) else "")))
    return found


def scan_python(path: Path, shown: str) -> list[Found]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    funcs, modules = _link_aliases(tree)
    consts = _string_constants(tree)
    found: list[Found] = []
    inside: set[int] = set()  # constants that are parts of an f-string or + chain
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr) or (
            isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add)
        ):
            if id(node) in inside:
                continue
            for sub in ast.walk(node):
                inside.add(id(sub))
            found += _rendered_links(_render(node, consts), f"{shown}:{node.lineno}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in inside:
                found += _literal_links(node.value, f"{shown}:{node.lineno}")
        elif isinstance(node, ast.Call):
            func = node.func
            is_link = (isinstance(func, ast.Name) and func.id in funcs) or (
                isinstance(func, ast.Attribute)
                and func.attr == "link"
                and isinstance(func.value, ast.Name)
                and func.value.id in modules
            )
            if not is_link:
                continue
            args = list(node.args) + [k.value for k in node.keywords]
            if len(args) == 2 and all(
                isinstance(a, ast.Constant) and isinstance(a.value, str) for a in args
            ):
                file, heading = (a.value for a in args)  # type: ignore[attr-defined]
                found.append(Found(f"{shown}:{node.lineno}", link(file, heading)))
            else:
                found.append(Found(f"{shown}:{node.lineno}", None, "link() with non-literal args"))
    return list(dict.fromkeys(found))


def scan_tree(root: Path, dirs: tuple[str, ...] = SCANNED) -> list[Found]:
    found: list[Found] = []
    for top in dirs:
        for path in sorted((root / top).rglob("*")):
            if not path.is_file() or path.suffix not in TEXT_SUFFIXES:
                continue
            shown = str(path.relative_to(root))
            if "__pycache__" in path.parts or shown in NOT_SCANNED:
                continue
            if path.suffix == ".py":
                found += scan_python(path, shown)
            else:
                for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                    found += _literal_links(line, f"{shown}:{number}")
    return found


def module_hook_links(where: str) -> tuple[str, list[str]] | None:
    """(hook name, links) from the nearest `runbook_links()` of the module at `where`
    (`xpufleet/a/b.py:12` -> xpufleet.a.b, then xpufleet.a, then xpufleet)."""
    parts = list(Path(where.split(":")[0]).with_suffix("").parts)
    if not parts or parts[0] != "xpufleet":
        return None
    if parts[-1] == "__init__":
        parts.pop()
    while parts:
        name = ".".join(parts)
        hook = getattr(importlib.import_module(name), "runbook_links", None)
        if callable(hook):
            return f"{name}.runbook_links()", list(hook())
        parts.pop()
    return None


def problems(
    root: Path,
    found: list[Found],
    hook_links: Callable[[str], tuple[str, list[str]] | None] = module_hook_links,
) -> list[str]:
    """Why each link does not resolve (empty list: all of them land on a heading)."""
    out: list[str] = []
    cache: dict[Path, set[str]] = {}
    expanded: list[Found] = []
    hooks_done: set[str] = set()
    for item in found:
        if item.target is not None:
            expanded.append(item)
            continue
        hooked = hook_links(item.where)
        if hooked is None:
            out.append(
                f"{item.where}: cannot be checked ({item.note}); expose runbook_links() "
                "in that module or a package above it"
            )
        elif hooked[0] not in hooks_done:
            hooks_done.add(hooked[0])
            expanded.extend(Found(hooked[0], target) for target in hooked[1])
    for item in expanded:
        assert item.target is not None
        path_part, _, anchor = item.target.partition("#")
        path = root / path_part
        if not path.is_file():
            out.append(f"{item.where}: {item.target}: no such runbook {path_part}")
            continue
        known = cache.setdefault(path, anchors(path))
        if anchor and anchor not in known:
            out.append(f"{item.where}: {item.target}: no heading with anchor #{anchor}")
    return out


def markdown_link_problems(md: Path) -> list[str]:
    """Relative links of one runbook: the file exists and the anchor is one of its headings."""
    out: list[str] = []
    for number, line in enumerate(md.read_text(encoding="utf-8").splitlines(), 1):
        for target in MD_LINK.findall(line):
            if re.match(r"^[a-z]+:", target):
                continue  # http:, https:, mailto:
            file_part, _, anchor = target.partition("#")
            path = (md.parent / file_part).resolve() if file_part else md
            where = f"{md.name}:{number}: {target}"
            if not path.exists():
                out.append(f"{where}: no such file")
            elif anchor and path.suffix == ".md" and anchor not in anchors(path):
                out.append(f"{where}: no heading with anchor #{anchor}")
    return out


# --------------------------------------------------------------------------- the real tree


def test_every_runbook_link_xpufleet_can_print_resolves() -> None:
    found = scan_tree(ROOT)
    assert problems(ROOT, found) == []


def test_index_links_every_runbook() -> None:
    index = ROOT / RUNBOOK_DIR / "index.md"
    targets = {t.partition("#")[0] for t in MD_LINK.findall(index.read_text())}
    assert set(INDEX_TARGETS) <= targets


@pytest.mark.parametrize("md", sorted((ROOT / RUNBOOK_DIR).glob("*.md")), ids=lambda p: p.name)
def test_runbook_relative_links_resolve(md: Path) -> None:
    assert markdown_link_problems(md) == []


# --------------------------------------------------------------------------- slugs


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Lock held", "lock-held"),
        ("`gpu.driver`: no Intel GPU driver", "gpudriver-no-intel-gpu-driver"),
        ("Wheel hash mismatch (sha256)", "wheel-hash-mismatch-sha256"),
        ("Rank crash / out of memory", "rank-crash--out-of-memory"),
        ("`ccl_env` and FI_PROVIDER", "ccl_env-and-fi_provider"),
        ("Roll back to the previous wheels", "roll-back-to-the-previous-wheels"),
        ("[Launch](launch.md) fails — after upgrade!", "launch-fails--after-upgrade"),
        ("Übergang 2025.1", "übergang-20251"),
    ],
)
def test_github_slugs(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor


def test_link_and_duplicate_headings() -> None:
    assert link("provision", "Lock held") == "docs/runbooks/provision.md#lock-held"
    assert link("provision.md", "Lock held") == "docs/runbooks/provision.md#lock-held"
    text = "# Upgrade\n## Verify\n```sh\n# not a heading\n```\n## Verify\n### Verify ###\n"
    text += '<a id="custom-anchor"></a>\n'
    assert anchors_of_text(text) == {"upgrade", "verify", "verify-1", "verify-2", "custom-anchor"}


# --------------------------------------------------------------------------- it can fail


MODULE_WITH_LINKS = """\
from .runbooks import link
from . import runbooks as rb
RUNBOOK = 'docs/runbooks/ops.md'
GOOD = 'docs/runbooks/ops.md#lock-held'
BAD_ANCHOR = 'docs/runbooks/ops.md#lock-hold'
BAD_FILE = 'docs/runbooks/gone.md#ops'
VIA_LINK = link('ops', 'Lock held')
VIA_LINK_BAD = rb.link('ops', 'No such heading')
CONCAT_GOOD = RUNBOOK + '#lock-held'
FSTRING_BAD = f'{RUNBOOK}#lock-hold'
def dynamic(check_id, other_runbook):
    return f'docs/runbooks/ops.md#{check_id}'
def dynamic_2(check_id, other_runbook):
    return link('ops', check_id)
def dynamic_3(check_id, other_runbook):
    return f'{RUNBOOK}#{check_id}'
def dynamic_4(check_id, other_runbook):
    return f'{other_runbook}#lock-held'
def not_a_link(message, runbook):
    return f'{message} (see {runbook})'
"""
#: line of MODULE_WITH_LINKS -> what the check must say about it (None: resolves)
EXPECTED = {
    3: None,  # a link without anchor: the file must exist
    4: None,
    5: "#lock-hold",
    6: "no such runbook",
    7: None,
    8: "#no-such-heading",
    9: None,
    10: "#lock-hold",
    12: "cannot be checked",
    14: "cannot be checked",
    16: "cannot be checked",
    18: "cannot be checked",
}


def test_bad_links_are_caught(tmp_path: Path) -> None:
    (tmp_path / RUNBOOK_DIR).mkdir(parents=True)
    (tmp_path / RUNBOOK_DIR / "ops.md").write_text("# Ops\n\n## Lock held\n\n[x](ops.md#nope)\n")
    (tmp_path / "xpufleet").mkdir()
    (tmp_path / "xpufleet" / "mod.py").write_text(MODULE_WITH_LINKS)
    (tmp_path / "roles" / "r").mkdir(parents=True)
    (tmp_path / "roles" / "r" / "defaults.yaml").write_text(
        "runbook: docs/runbooks/ops.md#lock-held\nother: docs/runbooks/ops.md#missing\n"
    )
    found = scan_tree(tmp_path)
    seen_lines = {int(f.where.rsplit(":", 1)[1]) for f in found if "mod.py" in f.where}
    assert seen_lines == set(EXPECTED)  # line 20 (not a link) is not taken for one
    issues = problems(tmp_path, found, hook_links=lambda where: None)
    for line, expected in EXPECTED.items():
        mine = [p for p in issues if p.startswith(f"xpufleet/mod.py:{line}:")]
        if expected is None:
            assert mine == [], line
        else:
            assert len(mine) == 1 and expected in mine[0], (line, mine)
    # the roles file: one good, one missing anchor
    assert [p for p in issues if "defaults.yaml" in p] == [
        "roles/r/defaults.yaml:2: docs/runbooks/ops.md#missing: no heading with anchor #missing"
    ]
    # run-time links are proven through the module's runbook_links() hook
    hooked = ("xpufleet.mod.runbook_links()", ["docs/runbooks/ops.md#lock-held"])
    assert not any("cannot be checked" in p for p in problems(tmp_path, found, lambda w: hooked))
    bad_hook = (hooked[0], [*hooked[1], "docs/runbooks/ops.md#lock-hold"])
    assert [p for p in problems(tmp_path, found, lambda w: bad_hook) if "runbook_links" in p] == [
        "xpufleet.mod.runbook_links(): docs/runbooks/ops.md#lock-hold: no heading with anchor "
        "#lock-hold"
    ]
    md_issues = markdown_link_problems(tmp_path / RUNBOOK_DIR / "ops.md")
    assert md_issues == ["ops.md:5: ops.md#nope: no heading with anchor #nope"]

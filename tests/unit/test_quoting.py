"""Hostile values go through xpufleet.shell and reach a real shell as literal text.

Each value is run through a real local `sh -c` (and `bash -c`). Nothing destructive can
run even if quoting broke: PATH holds only fake `rm` and `touch` that record their
call in a canary file, and the hostile values only name relative commands, the canary
path or redirections into it. The canary must not exist afterwards.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from xpufleet import shell
from xpufleet.inventory import load_inventory

SHELLS = [s for s in ("/bin/sh", "/bin/bash") if Path(s).exists()]

#: hostile templates; CANARY is replaced by the test's canary path
HOSTILE = [
    "$(touch CANARY)",
    "`touch CANARY`",
    "'; rm -rf /'",
    "'; touch CANARY; echo '",
    '"; touch CANARY; echo "',
    "a; rm -rf / ; touch CANARY",
    "x && touch CANARY || touch CANARY",
    "$(rm -rf /)",
    "line one\ntouch CANARY\nline three",
    "\\'; touch CANARY; echo \\'",
    "'\"'\"'; touch CANARY",
    "${IFS}touch${IFS}CANARY",
    "> CANARY",
    "| touch CANARY",
    "& touch CANARY &",
    "* ? [a-z] ~root ~",
    "$HOME $0 $$ $? $(id) ${PATH}",
    "!! !-1",
    "-n",
    "--help",
    "",
    "   leading and trailing   ",
    "tab\tcarriage\rreturn",
    "ünïcödé 漢字 🚀 \u202ertl",
    "\x01\x1b[31mescape\x7f",
    "back\\slash\\\\ and \\n not a newline",
]

#: child that reports its argv and environment as bytes (hex), so nothing is decoded
REPORTER = (
    "import json, os, sys; "
    "print(json.dumps({'argv': [os.fsencode(a).hex() for a in sys.argv[1:]], "
    "'env': {k: os.environb[k.encode()].hex() for k in os.environ if k.startswith('HOSTILE_')}}))"
)


@pytest.fixture
def sandbox(tmp_path: Path) -> tuple[Path, dict[str, str], list[str]]:
    """(canary path, environment with a fake-only PATH, hostile values for this test)."""
    canary = tmp_path / "canary"
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    for name in ("rm", "touch", "id"):
        fake = fake_bin / name
        fake.write_text(f'#!/bin/sh\necho "{name} $*" >> {shell.quote(canary)}\n')
        fake.chmod(0o755)
    env = {"PATH": str(fake_bin), "HOME": str(tmp_path), "LC_ALL": "C.UTF-8"}
    values = [v.replace("CANARY", str(canary)) for v in HOSTILE]
    return canary, env, values


def run_shell(sh: str, command: str, env: dict[str, str]) -> bytes:
    done = subprocess.run([sh, "-c", command], env=env, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


@pytest.mark.parametrize("sh", SHELLS)
def test_quote_arrives_literally(sh: str, sandbox: tuple) -> None:
    canary, env, values = sandbox
    for value in values:
        out = run_shell(sh, "printf '%s' " + shell.quote(value), env)
        assert out == value.encode(), value
    assert not canary.exists(), canary.read_text()


@pytest.mark.parametrize("sh", SHELLS)
def test_join_keeps_every_argument_whole(sh: str, sandbox: tuple) -> None:
    canary, env, values = sandbox
    out = run_shell(sh, shell.join([sys.executable, "-c", REPORTER, *values]), env)
    argv = [bytes.fromhex(h).decode() for h in json.loads(out)["argv"]]
    assert argv == values
    assert not canary.exists(), canary.read_text()


@pytest.mark.parametrize("sh", SHELLS)
def test_env_assignments_arrive_literally(sh: str, sandbox: tuple) -> None:
    canary, env, values = sandbox
    hostile_env = {f"HOSTILE_{i}": v for i, v in enumerate(values)}
    command = shell.env_assignments(hostile_env) + shell.join([sys.executable, "-c", REPORTER])
    out = run_shell(sh, command, env)
    received = {k: bytes.fromhex(h).decode() for k, h in json.loads(out)["env"].items()}
    assert received == hostile_env
    assert not canary.exists(), canary.read_text()


@pytest.mark.parametrize("name", ["A-B", "1X", "X; touch y", "X=Y", "", "PATH ", "$(x)"])
def test_env_assignments_refuse_bad_names(name: str) -> None:
    with pytest.raises(ValueError):
        shell.env_assignments({name: "v"})


def test_env_assignments_empty_is_nothing() -> None:
    assert shell.env_assignments({}) == ""


def test_quote_is_one_shell_word() -> None:
    import shlex

    for value in HOSTILE:
        assert shlex.split(shell.quote(value)) == [value]


def test_inventory_values_reach_the_shell_as_text(sandbox: tuple, tmp_path: Path) -> None:
    """A hostile variable in an inventory stays text from YAML to a remote-style command."""
    canary, env, values = sandbox
    inventory = tmp_path / "inv.yaml"
    host_vars = {f"custom_{i}": v for i, v in enumerate(values)}
    host_vars["model_path"] = f"/models/$(touch {canary})"
    inventory.write_text(
        yaml.safe_dump({"all": {"hosts": {"node1": host_vars}}}, allow_unicode=True)
    )
    host = load_inventory(inventory).hosts["node1"]
    assert host.vars == host_vars  # YAML kept every byte
    names = sorted(host_vars)
    command = f"cd {shell.quote(tmp_path)} && " + shell.join(
        [sys.executable, "-c", REPORTER, *(host.vars[n] for n in names)]
    )
    for sh in SHELLS:
        out = run_shell(sh, command, env)
        argv = [bytes.fromhex(h).decode() for h in json.loads(out)["argv"]]
        assert argv == [host_vars[n] for n in names]
    assert not canary.exists(), canary.read_text()


def test_the_sandbox_would_catch_an_unquoted_value(sandbox: tuple) -> None:
    """The canary works: the same value without quoting does run the fake command."""
    canary, env, values = sandbox
    assert shutil.which("touch", path=env["PATH"])
    subprocess.run(["/bin/sh", "-c", "printf '%s' " + values[0]], env=env, timeout=30)
    assert canary.exists()

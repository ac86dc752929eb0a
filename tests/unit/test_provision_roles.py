"""Roles on the control node: variables' precedence, templates, secrets, tags (no SSH)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xpufleet.errors import InputError
from xpufleet.host import Host
from xpufleet.provision import plan
from xpufleet.provision.roles import ROLE_ORDER, ROLES_DIR
from xpufleet.provision.steps import File, Skip
from xpufleet.variables import VARIABLES

SHA = "ab" * 32


def host(name: str = "node1", **vars: object) -> Host:
    return Host(name, "127.0.0.1", vars=dict(vars))


def steps_of(h: Host, wheels: Path, **kw: object) -> dict[str, object]:
    plans = plan([h], wheels, **kw)  # type: ignore[arg-type]
    return {s.id: s for s in plans[h.name][1]}


def test_role_order_and_ids(tmp_path: Path) -> None:
    ids = list(steps_of(host(), tmp_path))
    roles = [i.split(".")[1] for i in ids]
    assert roles == sorted(roles, key=ROLE_ORDER.index)
    assert ids[0] == "provision.oneapi.tree"
    assert "provision.python_env.pip_packages" not in ids  # pins are in the lock now
    assert "provision.wheels.manifest" in ids  # no manifest: a skip that says why


def test_precedence_registry_then_role_defaults_then_inventory() -> None:
    plain = host().var.values
    assert plain["oneapi_env_file"] == "/opt/xpufleet/env/oneapi.sh"  # role default, rendered
    assert plain["pip_packages"] == VARIABLES["pip_packages"].default
    moved = host(install_dir="/srv/x", pip_packages=["gguf"]).var.values
    assert moved["oneapi_env_file"] == "/srv/x/env/oneapi.sh"
    assert moved["pip_packages"] == ["gguf"]
    assert host(oneapi_env_file="/etc/o.sh").var.values["oneapi_env_file"] == "/etc/o.sh"


def test_every_role_default_is_documented_in_its_file() -> None:
    """Each variable sits in a block (no blank line) that starts with a comment."""
    for name in ROLE_ORDER + ("build",):
        text = (ROLES_DIR / name / "defaults.yaml").read_text()
        commented = False
        for line in text.splitlines():
            if not line.strip():
                commented = False
            elif line.startswith("#"):
                commented = True
            elif not line.startswith(" "):
                key = line.split(":")[0]
                assert commented, f"roles/{name}/defaults.yaml: {key} has no comment"


def test_hostile_values_reach_files_quoted(tmp_path: Path) -> None:
    evil = "$(touch /tmp/x)'; rm -rf /"
    steps = steps_of(host(nic=evil, model_path=evil), tmp_path)
    env = steps["provision.sglang.env_file"]
    script = steps["provision.sglang.launch_script"]
    assert isinstance(env, File) and isinstance(script, File)
    assert "export GLOO_SOCKET_IFNAME='$(touch /tmp/x)'\"'\"'; rm -rf /'" in env.content.decode()
    assert "--model-path '$(touch /tmp/x)'\"'\"'; rm -rf /'" in script.content.decode()
    assert script.mode == 0o755


def test_secrets_file_0600_and_missing_secret_is_bad_input(tmp_path: Path) -> None:
    h = host(secret_env=["HF_TOKEN"])
    with pytest.raises(InputError, match="HF_TOKEN"):
        plan([h], tmp_path, environ={})
    steps = steps_of(h, tmp_path, environ={"HF_TOKEN": "hf_secret"})
    secret = steps["provision.sglang.secrets"]
    assert isinstance(secret, File) and secret.secret and secret.mode == 0o600
    assert b"export HF_TOKEN=hf_secret" in secret.content
    assert "hf_secret" not in secret.probe()
    with pytest.raises(InputError):
        plan([host(ccl_env={"BAD NAME": "1"})], tmp_path)


def test_tags_pick_roles_and_unknown_tags_refused(tmp_path: Path) -> None:
    only = steps_of(host(), tmp_path, tags="oneapi,sglang")
    assert {i.split(".")[1] for i in only} == {"oneapi", "sglang"}
    skipped = steps_of(host(), tmp_path, skip_tags="wheels,templates")
    assert not any(".wheels." in i for i in skipped)
    assert not any(isinstance(s, File) and s.source for s in skipped.values())
    with pytest.raises(InputError, match="unknown tag"):
        plan([host()], tmp_path, tags="oneapy")


def test_venv_skips_conda_packages_with_reason_and_conda_installs_them(tmp_path: Path) -> None:
    venv = steps_of(host(), tmp_path)["provision.python_env.conda_packages"]
    assert isinstance(venv, Skip) and "libsqlite=3.48.0" in venv.reason
    conda = steps_of(host(python_env="conda"), tmp_path)
    assert "provision.python_env.conda.libsqlite" in conda


def test_wheels_from_manifest_in_dependency_order(tmp_path: Path) -> None:
    items = [
        {"name": n, "version": "1", "filename": f"{n}-1-py3-none-any.whl", "sha256": SHA, "size": 1}
        for n in ("sglang", "vllm", "torch")
    ]
    (tmp_path / "manifest.json").write_text(json.dumps({"format": 1, "wheels": items}))
    for item in items:
        (tmp_path / item["filename"]).write_bytes(b"w")
    ids = [i for i in steps_of(host(), tmp_path) if ".wheels." in i]
    assert ids == [
        "provision.wheels.cache_dir",
        "provision.wheels.lock_file",
        "provision.wheels.lock",
        "provision.wheels.torch",
        "provision.wheels.vllm",
        "provision.wheels.sglang",
        "provision.wheels.pip_check",
        "provision.wheels.imports",
    ]


def test_a_wheel_missing_on_the_control_node_is_bad_input_unless_skipped(tmp_path: Path) -> None:
    item = {"name": "torch", "version": "1", "filename": "torch-1-py3-none-any.whl",
            "sha256": SHA, "size": 1}  # fmt: skip
    (tmp_path / "manifest.json").write_text(json.dumps({"format": 1, "wheels": [item]}))
    with pytest.raises(InputError) as caught:
        steps_of(host(), tmp_path)
    assert caught.value.exit_code == 2
    assert caught.value.file == str(tmp_path / "manifest.json")
    assert caught.value.key == "provision.wheels.torch"
    assert "missing on the control node" in str(caught.value)
    assert "provision.wheels.torch" not in steps_of(host(), tmp_path, skip_tags="wheels")


def test_base_site_packages_pth(tmp_path: Path) -> None:
    steps = steps_of(host(base_site_packages=["/lab/base/site-packages"]), tmp_path)
    pth = steps["provision.python_env.base_site_packages"]
    assert pth.stdin == b"/lab/base/site-packages\n"  # type: ignore[attr-defined]
    assert isinstance(steps_of(host(), tmp_path)["provision.python_env.base_site_packages"], Skip)

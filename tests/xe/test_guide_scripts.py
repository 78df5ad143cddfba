"""The guide's bash-cli examples (chapter 4: clone-vms, suspend-resume, install-debian), written
as the guide shows them (scripts/), with XE pointing at our `xe`, against a running server."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .conftest import XE, xe_env
from .test_cli import UUID

SCRIPTS = Path(__file__).parent / "scripts"


@pytest.fixture
def guide(server, tmp_path):
    """Run a script with ~/.xe naming the server (the scripts skip their prompts then)."""
    home = tmp_path / "home"
    home.mkdir()
    host, port = server.url.split("//")[1].rsplit(":", 1)
    (home / ".xe").write_text(f"server={host}\nport={port}\nusername=root\n"
                              f"password={server.password}\nnossl=true\n")
    env = xe_env(home, XE=" ".join(XE))

    def run(script: str, *args: str, input: str | None = None, env_=None):
        return subprocess.run(["bash", str(SCRIPTS / script), *args], env=env_ or env,
                              input=input, capture_output=True, text=True, timeout=240)
    run.env = env
    run.home = home
    return run


def xe(env, *args: str) -> str:
    r = subprocess.run([*XE, *args], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def new_vm(env, name: str) -> str:
    return xe(env, "vm-install", "template=Debian Etch 4.0", f"new-name-label={name}")


def test_clone_vms_halted(guide):
    vm = new_vm(guide.env, "guide-halted")
    r = guide("clone-vms", vm)
    assert r.returncode == 0, r.stdout + r.stderr
    clone = r.stdout.strip().splitlines()[-1]
    assert UUID.match(clone)
    assert xe(guide.env, "vm-param-get", f"uuid={clone}", "param-name=name-label") == "cloned_vm"
    assert xe(guide.env, "vm-param-get", f"uuid={vm}", "param-name=power-state") == "halted"


def test_clone_vms_running(guide):
    vm = new_vm(guide.env, "guide-running")
    xe(guide.env, "vm-start", f"uuid={vm}")
    r = guide("clone-vms", vm)
    assert r.returncode == 0, r.stdout + r.stderr
    clone = r.stdout.strip().splitlines()[-1]
    for u in (vm, clone):
        assert xe(guide.env, "vm-param-get", f"uuid={u}", "param-name=power-state") == "running"


def test_clone_vms_prompts_without_dot_xe(guide, server, tmp_path):
    """No ~/.xe: the script asks for server, user and password and passes -s/-u/-pw to xe."""
    home = tmp_path / "bare"
    home.mkdir()
    env = xe_env(home, XE=" ".join(XE))
    vm = new_vm(guide.env, "guide-prompt")
    host, port = server.url.split("//")[1].rsplit(":", 1)
    answers = f"{host} -p {port} --nossl\nroot\n{server.password}\n"
    r = guide("clone-vms", vm, input=answers, env_=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert UUID.match(r.stdout.strip().splitlines()[-1])


def test_clone_vms_unknown_uuid(guide):
    r = guide("clone-vms", "00000000-0000-0000-0000-000000000000")
    assert r.returncode == 2 and "no VM with uuid" in r.stdout


def test_suspend_resume(guide):
    vm = new_vm(guide.env, "guide-suspend")
    xe(guide.env, "vm-start", f"uuid={vm}")
    r = guide("suspend-resume", vm)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "done" in r.stdout
    assert xe(guide.env, "vm-param-get", f"uuid={vm}", "param-name=power-state") == "running"


def test_install_debian(guide):
    r = guide("install-debian", "guide-debian", "120")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "has IP address" in r.stdout
    vm = xe(guide.env, "vm-list", "name-label=guide-debian", "--minimal")
    assert xe(guide.env, "vm-param-get", f"uuid={vm}", "param-name=name-description") == \
        "Debian Etch VM installed by the CLI example"
    assert xe(guide.env, "vif-list", f"vm-uuid={vm}", "params=device", "--minimal") == "0"

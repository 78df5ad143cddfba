"""`xe` against the real server: listing, parameters, map/set syntax, errors, connections."""

from __future__ import annotations

import re
import socket
import subprocess
import time

import pytest

from httpd.model.datamodel import CLASSES
from httpd.xe.fields import params_of

from .conftest import XE, run_xe, xe_env

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def dom0(xe) -> str:
    return xe.out("vm-list", "is-control-domain=true", "--minimal")


def test_vm_list_layout(xe):
    out = xe.out("vm-list")
    lines = out.splitlines()
    assert lines[0].startswith("uuid ( RO)") and lines[0].endswith(dom0(xe))
    # labels right-aligned to one column of colons
    cols = {line.index(": ") for line in lines if line}
    assert len(cols) == 1
    assert re.search(r"^ +name-label \( RW\): Control domain on host", out, re.M)
    assert re.search(r"^ +power-state \( RO\): running$", out, re.M)


def test_vm_list_leaves_templates_out_and_template_list_has_them(xe):
    vms = xe.out("vm-list", "--minimal").split(",")
    templates = xe.out("template-list", "--minimal").split(",")
    assert dom0(xe) in vms and len(templates) >= 4
    assert not set(vms) & set(templates)
    names = xe.out("template-list", "params=name-label", "--minimal")
    assert "Debian Etch 4.0" in names.split(",")
    assert xe.out("vm-list", "is-a-template=true", "--minimal").split(",") == templates


def test_minimal_and_params(xe):
    u = dom0(xe)
    assert UUID.match(u)
    assert xe.out("vm-list", f"uuid={u}", "params=power-state", "--minimal") == "running"
    assert xe.out("vm-list", f"uuid={u}", "params=dom-id", "--minimal") == "0"
    out = xe.out("vm-list", f"uuid={u}", "params=name-label,power-state")
    assert "uuid" not in out and "name-label ( RW)" in out and "power-state ( RO)" in out
    assert xe.out("vm-list", "uuid=00000000-0000-0000-0000-000000000000", "--minimal") == ""
    everything = xe.out("vm-list", f"uuid={u}", "params=all")
    assert "memory-static-max ( RW)" in everything and "other-config (MRW)" in everything


def test_param_list_covers_the_datamodel(xe):
    out = xe.out("vm-param-list", f"uuid={dom0(xe)}")
    labels = [line.split(":")[0].strip() for line in out.splitlines() if line.strip()]
    expected = [p.label for p in params_of("VM")]
    assert labels == expected
    assert "name-label ( RW)" in labels and "tags (SRW)" in labels and "consoles (SRO)" in labels
    # every datamodel field appears once (refs named after their class become <class>-uuid)
    for cls in ("VM", "VBD", "SR", "console"):
        names = {p.field.name for p in params_of(cls)}
        assert names >= {f.name for f in CLASSES[cls].fields}


def test_param_set_get_map_and_set_syntax(xe):
    u = dom0(xe)
    xe("vm-param-set", f"uuid={u}", "other-config:guide-key=v1", "name-description=a b c",
       "tags=red,green", "xenstore-data:vm-data/foo=bar")
    assert xe.out("vm-param-get", f"uuid={u}", "param-name=name-description") == "a b c"
    assert xe.out("vm-param-get", f"uuid={u}", "param-name=other-config",
                  "param-key=guide-key") == "v1"
    assert "guide-key: v1" in xe.out("vm-param-get", f"uuid={u}", "param-name=other-config")
    assert xe.out("vm-param-get", f"uuid={u}", "param-name=xenstore-data") == "vm-data/foo: bar"
    assert xe.out("vm-param-get", f"uuid={u}", "param-name=tags") == "red; green"
    # overwrite a key (xe semantics: set, not add)
    xe("vm-param-set", f"uuid={u}", "other-config:guide-key=v2")
    assert xe.out("vm-param-get", f"uuid={u}", "param-name=other-config",
                  "param-key=guide-key") == "v2"
    # param-add / param-remove on maps and sets
    xe("vm-param-add", f"uuid={u}", "param-name=other-config", "k2=x", "k3=y")
    xe("vm-param-remove", f"uuid={u}", "param-name=other-config", "param-key=k2")
    oc = xe.out("vm-param-get", f"uuid={u}", "param-name=other-config")
    assert "k3: y" in oc and "k2" not in oc
    xe("vm-param-add", f"uuid={u}", "param-name=tags", "param-key=blue")
    xe("vm-param-remove", f"uuid={u}", "param-name=tags", "param-key=red")
    assert xe.out("vm-param-get", f"uuid={u}", "param-name=tags") == "green; blue"
    # filters on maps/sets use the printed form
    assert xe.out("vm-list", "tags=green; blue", "--minimal") == u
    xe("vm-param-clear", f"uuid={u}", "param-name=tags")
    assert xe.out("vm-param-get", f"uuid={u}", "param-name=tags") == ""
    # typed values
    xe("vm-param-set", f"uuid={u}", "VCPUs-max=4", "HVM-shadow-multiplier=2.5")
    assert xe.out("vm-param-get", f"uuid={u}", "param-name=VCPUs-max") == "4"


def test_other_classes(xe):
    sr = xe.out("sr-list", "name-label=Local storage", "--minimal")
    assert UUID.match(sr)
    assert xe.out("pool-list", "params=default-SR", "--minimal") == sr
    assert xe.out("pbd-list", f"sr-uuid={sr}", "params=sr-uuid", "--minimal") == sr
    host = xe.out("host-list", "--minimal")
    xe("host-param-set", f"uuid={host}", "other-config:k=v")
    assert xe.out("host-param-get", f"uuid={host}", "param-name=other-config",
                  "param-key=k") == "v"
    cons = xe.out("console-list", f"vm-uuid={dom0(xe)}", "params=protocol", "--minimal")
    assert sorted(cons.split(",")) == ["rfb", "vt100"]
    out = xe.out("console-list", f"vm-uuid={dom0(xe)}")
    assert "vm-name-label ( RO): Control domain" in out and "/console?" in out


def test_create_commands_on_implicit_messages(xe, xenapi):
    vm = xenapi.xenapi.VM.create({"name_label": "xe-devices", "power_state": "Halted"})
    u = xenapi.xenapi.VM.get_uuid(vm)
    net = xe.out("network-list", "--minimal").split(",")[0]
    vif = xe.out("vif-create", f"vm-uuid={u}", f"network-uuid={net}", "device=0")
    assert xe.out("vif-list", f"vm-uuid={u}", "--minimal") == vif
    vif2 = xe.out("vm-vif-add", "vm=xe-devices", f"network-uuid={net}")
    assert xe.out("vif-param-get", f"uuid={vif2}", "param-name=device") == "1"
    vdi = xe.out("vm-disk-add", f"uuid={u}", "disk-size=16MiB", "device=0")
    assert xe.out("vdi-param-get", f"uuid={vdi}", "param-name=virtual-size") == str(16 << 20)
    assert xe.out("vbd-list", f"vm-uuid={u}", "params=vdi-uuid", "--minimal") == vdi
    # the same device again: the VBD is refused, and the disk made for it goes too
    vdis = xe.out("vdi-list", "--minimal")
    r = xe("vm-disk-add", f"uuid={u}", "disk-size=1MiB", "device=0", check=False)
    assert r.returncode != 0 and "DEVICE_ALREADY_EXISTS" in r.stderr
    assert xe.out("vdi-list", "--minimal") == vdis
    vdi2 = xe.out("vdi-create", "name-label=spare", "virtual-size=1MiB")
    vbd = xe.out("vbd-create", f"vm-uuid={u}", f"vdi-uuid={vdi2}", "device=1")
    assert xe.out("vbd-param-get", f"uuid={vbd}", "param-name=vm-name-label") == "xe-devices"
    xe("vbd-destroy", f"uuid={vbd}")
    xe("vdi-destroy", f"uuid={vdi2}")
    xe("vm-uninstall", f"uuid={u}", "--force")
    assert xe.out("vm-list", f"uuid={u}", "--minimal") == ""
    assert xe.out("vdi-list", f"uuid={vdi}", "--minimal") == ""


def test_vm_selectors(xe, xenapi):
    a = xenapi.xenapi.VM.create({"name_label": "twin"})
    b = xenapi.xenapi.VM.create({"name_label": "twin"})
    r = xe("vm-destroy", "vm=twin", check=False)
    assert r.returncode != 0 and "2 vms match" in r.stderr
    r = xe("vm-destroy", "vm=nobody", check=False)
    assert r.returncode != 0 and "no matching vms" in r.stderr
    xe("vm-destroy", f"vm={xenapi.xenapi.VM.get_uuid(a)}")
    xe("vm-destroy", "name-label=twin")
    assert xe.out("vm-list", "name-label=twin", "--minimal") == ""
    del b


def test_event_wait(xe, xenapi):
    vm = xenapi.xenapi.VM.create({"name_label": "waiter"})
    u = xenapi.xenapi.VM.get_uuid(vm)
    # already true: returns at once
    xe("event-wait", "class=vm", f"uuid={u}", "name-label=waiter")
    proc = subprocess.Popen([*XE, "event-wait", "class=vm", f"uuid={u}",
                             "name-description=ready"],
                            env=xe.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    time.sleep(1.0)
    assert proc.poll() is None
    xe("vm-param-set", f"uuid={u}", "name-description=ready")
    assert proc.wait(20) == 0, proc.stderr.read()
    r = xe("event-wait", "class=vm", f"uuid={u}", "name-label=never", "timeout=1", check=False)
    assert r.returncode != 0 and "timed out" in r.stderr
    xe("event-wait", "class=vm", f"uuid={u}", "name-label=/=never")
    xenapi.xenapi.VM.destroy(vm)


# --- failures ------------------------------------------------------------------------------------

def one_line(r) -> str:
    assert r.returncode != 0
    assert r.stdout == ""
    return r.stderr.strip()


def test_wrong_password(xe):
    msg = one_line(xe.tcp("vm-list", password="wrong"))
    assert "authentication failed" in msg and "\n" not in msg


def test_tcp_with_flags_and_dot_xe(xe, tmp_path):
    vms = xe.out("vm-list", "--minimal")
    r = xe.tcp("vm-list", "--minimal")
    assert r.returncode == 0 and r.stdout.strip() == vms
    host, port = xe.server.url.split("//")[1].rsplit(":", 1)
    home = tmp_path / "home2"
    home.mkdir()
    (home / ".xe").write_text(f"server={host}\nport={port}\nusername=root\n"
                              f"password={xe.server.password}\nnossl=true\n")
    r = run_xe("vm-list", "--minimal", env=xe_env(home))
    assert r.returncode == 0 and r.stdout.strip() == vms
    pwf = tmp_path / "pw"
    pwf.write_text(xe.server.password + "\n")
    r = run_xe("-s", host, "-p", port, "-pwf", str(pwf), "--nossl", "host-list", "--minimal",
               env=xe_env(tmp_path))
    assert r.returncode == 0 and UUID.match(r.stdout.strip())


def test_unknown_command(xe):
    r = xe("vm-lst", check=False)
    assert r.returncode != 0 and "Unknown command: vm-lst" in r.stderr
    assert "vm-list" in r.stderr   # a suggestion


def test_missing_parameter(xe):
    r = xe("vm-param-get", f"uuid={dom0(xe)}", check=False)
    assert r.returncode != 0 and "param-name" in r.stderr and "xe help vm-param-get" in r.stderr
    r = xe("vm-start", check=False)
    assert r.returncode != 0 and "uuid=" in r.stderr


def test_bad_uuid(xe):
    r = xe("vm-param-list", "uuid=00000000-0000-0000-0000-000000000000", check=False)
    assert r.returncode != 0
    assert "The uuid you supplied was invalid." in r.stderr
    assert "uuid: 00000000-0000-0000-0000-000000000000" in r.stderr
    assert "UUID_INVALID" in r.stderr


def test_bad_values(xe):
    u = dom0(xe)
    r = xe("vm-param-set", f"uuid={u}", "power-state=halted", check=False)
    assert r.returncode != 0 and "read-only" in r.stderr
    r = xe("vm-param-set", f"uuid={u}", "VCPUs-max=lots", check=False)
    assert r.returncode != 0 and "integer" in r.stderr
    r = xe("vm-param-get", f"uuid={u}", "param-name=no-such-thing", check=False)
    assert r.returncode != 0 and "unknown parameter" in r.stderr
    r = xe("vm-list", "colour=blue", check=False)
    assert r.returncode != 0 and "unknown field" in r.stderr
    r = xe("vm-param-get", f"uuid={u}", "param-name=other-config", "param-key=absent",
           check=False)
    assert r.returncode != 0 and "absent" in r.stderr


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_server_down(tmp_path):
    r = run_xe("-s", "127.0.0.1", "-p", str(_free_port()), "-pw", "x", "--nossl", "vm-list",
               env=xe_env(tmp_path))
    msg = one_line(r)
    assert "connection refused" in msg and "\n" not in msg
    r = run_xe("vm-list", env=xe_env(tmp_path, XE_SOCKET=str(tmp_path / "none.sock")))
    msg = one_line(r)
    assert "no such socket" in msg and "\n" not in msg


def test_tls_self_signed(tmp_path):
    from tests.server import Server
    srv = Server(tmp_path / "data", "--https-listen", "127.0.0.1:0").start()
    try:
        url = next(line.split()[-1] for line in srv.output if "on https://" in line)
        host, port = url.split("//")[1].rsplit(":", 1)
        base = ["-s", host, "-p", port, "-pw", srv.password, "host-list", "--minimal"]
        r = run_xe(*base, env=xe_env(tmp_path))
        msg = one_line(r)
        assert "not trusted" in msg and "--no-verify" in msg and "\n" not in msg
        r = run_xe(*base, "--no-verify", env=xe_env(tmp_path))
        assert r.returncode == 0 and UUID.match(r.stdout.strip()), r.stderr
        (tmp_path / ".xe").write_text("verify=false\n")
        r = run_xe(*base, env=xe_env(tmp_path))
        assert r.returncode == 0, r.stderr
        # an export and an import over TLS: the copy comes back whole
        conn = ["-s", host, "-p", port, "-pw", srv.password]
        vm = run_xe(*conn, "vm-install", "template=Other install media",
                    "new-name-label=over-tls", env=xe_env(tmp_path)).stdout.strip()
        xva = tmp_path / "tls.xva"
        r = run_xe(*conn, "vm-export", f"uuid={vm}", f"filename={xva}", env=xe_env(tmp_path))
        assert r.returncode == 0 and xva.stat().st_size > 0, r.stderr
        r = run_xe(*conn, "vm-import", f"filename={xva}", env=xe_env(tmp_path))
        assert r.returncode == 0 and UUID.match(r.stdout.strip()), r.stderr
        label = run_xe(*conn, "vm-param-get", f"uuid={r.stdout.strip()}",
                       "param-name=name-label", env=xe_env(tmp_path)).stdout.strip()
        assert label == "over-tls"
        # HTTPS client against the plain HTTP port: a clear one-liner too
        plain_port = srv.url.rsplit(":", 1)[1]
        r = run_xe("-s", host, "-p", plain_port, "-pw", srv.password, "--no-verify",
                   "host-list", env=xe_env(tmp_path))
        msg = one_line(r)
        assert "TLS" in msg and "--nossl" in msg
    finally:
        srv.stop()


# --- help and completion -----------------------------------------------------------------------

def test_help(xe):
    out = xe.out("help")
    for cmd in ("vm-list", "vm-start", "vm-export", "vm-import", "event-wait", "console-list",
                "template-list", "sr-param-set", "host-data-source-list"):
        assert cmd in out
    out = xe.out("help", "vm-param-get")
    assert "reqd params     : uuid, param-name" in out
    r = xe("help", "nope", check=False)
    assert r.returncode != 0


def test_completion_script(xe):
    from pathlib import Path
    import httpd.xe
    script = Path(httpd.xe.__file__).parent / "xe-completion.bash"

    def complete(line: str) -> list[str]:
        # split as bash does with the default COMP_WORDBREAKS: spaces, and '=' on its own
        words = []
        for w in line.split(" "):
            head, eq, tail = w.partition("=")
            words += [head, "=", tail] if eq else [w]
        if line.endswith("="):
            words.pop()
        prog = f"""
source {script}
xe() {{ {' '.join(XE)} "$@"; }}
COMP_LINE={line!r}
COMP_POINT=${{#COMP_LINE}}
COMP_WORDS=({' '.join(repr(w) for w in words)})
COMP_CWORD={len(words) - 1}
_xe_complete xe
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
        r = subprocess.run(["bash", "-c", prog], capture_output=True, text=True, env=xe.env,
                           timeout=30)
        assert r.returncode == 0, r.stderr
        return [w for w in r.stdout.splitlines() if w]

    assert "vm-list" in complete("xe vm-li")
    assert "vm-param-list" in complete("xe vm-param-l")
    assert complete("xe vm-param-get param-n") == ["param-name="]
    assert "power-state" in complete("xe vm-list params=pow")
    u = dom0(xe)
    assert complete(f"xe vm-param-list uuid={u[:6]}") == [u]
    assert complete("xe event-wait class=v") == ["vm", "vm-guest-metrics", "vm-metrics"] or \
        "vm" in complete("xe event-wait class=v")


def test_console_connects(xe):
    """`xe console` (no VM: the control domain's vt100 console) reaches the console and
    returns when stdin ends."""
    r = xe("console", input="", check=False, timeout=20)
    assert r.returncode == 0, r.stderr


def test_default_socket_is_found_beside_the_venv(tmp_path, monkeypatch):
    """`.venv/bin/xe` run from any directory finds `make run`'s agent: the var/xapi.sock of
    the checkout that holds its venv."""
    import sys

    from httpd.xe.client import default_socket
    checkout = tmp_path / "checkout"
    (checkout / "var").mkdir(parents=True)
    (checkout / "var" / "xapi.sock").touch()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("XE_SOCKET", raising=False)
    monkeypatch.setattr(sys, "prefix", str(checkout / ".venv"))
    monkeypatch.setattr(sys, "base_prefix", "/usr")
    assert default_socket() == str(checkout / "var" / "xapi.sock")
    monkeypatch.setenv("XE_SOCKET", "/run/other.sock")
    assert default_socket() == "/run/other.sock"
    monkeypatch.delenv("XE_SOCKET")
    monkeypatch.setattr(sys, "base_prefix", str(checkout / ".venv"))      # not in a venv
    assert default_socket() == "/var/lib/xcp/xapi"

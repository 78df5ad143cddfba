"""HTTPS with the self-signed certificate, and changing root's password."""

from __future__ import annotations

import ssl
import subprocess
import sys

import pytest
import XenAPI

from tests.server import Server


def test_https_listener_with_generated_certificate(tmp_path):
    srv = Server(tmp_path / "d", "--https-listen", "127.0.0.1:0").start()
    try:
        https = next(line.split()[-1] for line in srv.output
                     if line.startswith("xcp-httpd listening on https://"))
        # refused without trusting the self-signed certificate...
        strict = XenAPI.Session(https)
        with pytest.raises(ssl.SSLError):
            strict.xenapi.login_with_password("root", srv.password)
        # ...accepted when the client trusts it, or says it does not verify
        s = XenAPI.Session(https, ignore_ssl=True)
        s.xenapi.login_with_password("root", srv.password)
        assert len(s.xenapi.host.get_all()) == 1
        s.xenapi.session.logout()
        cert = srv.data_dir / "server.pem"
        ctx = ssl.create_default_context(cafile=str(cert))
        import urllib.request
        req = urllib.request.Request(https + "/jsonrpc", method="OPTIONS")
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            assert r.status == 200
        assert oct((srv.data_dir / "server.key").stat().st_mode & 0o777) == "0o600"
    finally:
        srv.stop()


def test_passwd_command_and_change_password(fresh_server):
    # the old password was just verified (and is remembered): a change must still end it
    XenAPI.Session(fresh_server.url).xenapi.login_with_password("root", fresh_server.password)
    subprocess.run([sys.executable, "-m", "httpd.cli", "passwd", "--data-dir",
                    str(fresh_server.data_dir), "--stdin"], input="new-one\n", text=True,
                   check=True, capture_output=True)
    # the running service applies it at the next login, no restart
    s = XenAPI.Session(fresh_server.url)
    with pytest.raises(XenAPI.Failure):
        s.xenapi.login_with_password("root", fresh_server.password)
    s.xenapi.login_with_password("root", "new-one")
    with pytest.raises(XenAPI.Failure) as e:
        s.xenapi.session.change_password("wrong", "x")
    assert e.value.details[0] == "SESSION_AUTHENTICATION_FAILED"
    s.xenapi.session.change_password("new-one", "third")
    s.xenapi.session.logout()
    with pytest.raises(XenAPI.Failure):
        s.xenapi.login_with_password("root", "new-one")
    s.xenapi.login_with_password("root", "third")
    s.xenapi.session.logout()
    stored = (fresh_server.data_dir / "root.passwd").read_text()
    assert "third" not in stored and "scrypt" in stored


def test_fd_soft_limit_is_lifted_for_many_consoles():
    """raise_fd_limit, the first thing `serve` does: from a soft limit of 256 (each console
    viewer costs three descriptors) up to the hard limit."""
    import resource

    from httpd.runner import raise_fd_limit
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip("hard limit too low to show anything")
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        got = raise_fd_limit()
        assert got > 256 and resource.getrlimit(resource.RLIMIT_NOFILE)[0] == got
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

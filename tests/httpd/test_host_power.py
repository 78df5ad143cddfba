"""host.restart_agent, host.shutdown_agent, host.reboot and host.shutdown against the real daemon:
xapi's refusals first, then what the process does (exec itself again, run the host power
command, or exit)."""

from __future__ import annotations

import xmlrpc.client

import XenAPI

from tests.failures import fails
from tests.server import Server


def test_restart_agent_execs_the_same_process_and_keeps_sessions(tmp_path):
    srv = Server(tmp_path / "data").start()
    try:
        s = srv.session()
        x = s.xenapi
        host = x.host.get_all()[0]
        vm = x.VM.get_by_name_label("demo")[0]
        x.VM.start(vm, False, False)
        pid = srv.proc.pid
        x.host.restart_agent(host)
        srv.wait_ready()
        assert srv.proc.pid == pid and srv.proc.poll() is None      # exec'd, not a new child
        again = XenAPI.Session(srv.url)                            # the new ephemeral port
        again._session = s._session                                # the same session, still valid
        y = again.xenapi
        assert y.session.get_this_host(s._session) == host
        assert y.VM.get_power_state(vm) == "Running"               # saved and resumed
        y.VM.hard_shutdown(vm)
        assert xmlrpc.client.ServerProxy(srv.url).session.logout(s._session)["Status"] == \
            "Success"
    finally:
        srv.stop()


def test_reboot_and_shutdown_need_a_disabled_host_with_no_running_vm(tmp_path):
    record = tmp_path / "power.log"
    srv = Server(tmp_path / "data", "--host-power-command",
                 f"sh -c 'echo \"$0\" >> {record}'").start()
    try:
        x = srv.session().xenapi
        host = x.host.get_all()[0]
        vm = x.VM.get_by_name_label("demo")[0]
        fails("HOST_NOT_DISABLED", x.host.reboot, host)
        fails("HOST_NOT_DISABLED", x.host.shutdown, host)
        x.VM.start(vm, False, False)
        x.host.disable(host)
        assert fails("HOST_IN_USE", x.host.shutdown, host) == ["HOST_IN_USE", host, "vm", vm]
        # before a reboot, XO and the SDK's shutdown.py evacuate: no other host takes the VM
        assert x.host.get_vms_which_prevent_evacuation(host) == {vm: ["NO_HOSTS_AVAILABLE", vm]}
        assert fails("NO_HOSTS_AVAILABLE", x.host.evacuate, host) == ["NO_HOSTS_AVAILABLE", vm]
        x.VM.hard_shutdown(vm)
        assert x.host.get_vms_which_prevent_evacuation(host) == {}
        x.host.evacuate(host)
        assert srv.proc.poll() is None and not record.exists()     # nothing was done
        x.host.reboot(host)
        assert srv.proc.wait(30) == 0
        assert record.read_text() == "reboot\n"                    # after the agent stopped
        assert "stopping: reboot asked by the API" in srv.proc.stdout.read()
    finally:
        srv.stop()


def test_shutdown_without_a_power_command_stops_the_agent(tmp_path):
    srv = Server(tmp_path / "data").start()
    try:
        x = srv.session().xenapi
        host = x.host.get_all()[0]
        x.host.disable(host)
        x.host.shutdown(host)
        assert srv.proc.wait(30) == 0
        srv.stop()
        srv.start()                              # and it comes back as it was left: disabled
        y = srv.session().xenapi
        assert y.host.get_enabled(host) is False
        y.host.enable(host)
        y.host.shutdown_agent()
        assert srv.proc.wait(30) == 0
    finally:
        srv.stop()

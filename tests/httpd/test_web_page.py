"""The web page at `/` (issue 18) in Debian's headless Chromium, driven by selenium, against
the real agent on loopback with real guests (QEMU, TCG here).

The tests run in order on one agent and one browser, as a person would use the page: a wrong
password, the login, the demo VM started with its button, its console typed at, its graphs, an
export, two imports (one cancelled), an expired session, the logout, then the same over HTTPS.
Screenshots of each step go to tests/.artifacts/web/.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import time
import urllib.parse
import urllib.request
import xmlrpc.client
from pathlib import Path

import pytest
import XenAPI

from httpd.backends.qemu.guest import fetch_kernel
from tests.server import Server

from .browser import Browser, chromium_installed
from .test_qemu_backend import BOOT, CACHE, SerialConsole

pytestmark = [
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                       reason="qemu-system-x86 is not installed"),
    pytest.mark.skipif(not chromium_installed(), reason="chromium-driver is not installed"),
]


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    data = tmp_path_factory.mktemp("w")        # short: QEMU's socket paths must fit
    (data / "guest").mkdir()
    fetch_kernel(CACHE)
    shutil.copytree(CACHE, data / "guest" / "kernel")
    srv = Server(data, "--backend", "qemu", "--accel", "tcg", "--guest-network", "user",
                 "--https-listen", "127.0.0.1:0").start(timeout=120)
    try:
        yield srv
    finally:
        srv.kill_domains()
        srv.stop()


@pytest.fixture(scope="module")
def api(agent):
    s = agent.session()
    yield s.xenapi
    s.xenapi.session.logout()


@pytest.fixture(scope="module")
def downloads(tmp_path_factory):
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def page(agent, downloads):
    b = Browser(downloads)
    try:
        yield b
    finally:
        b.quit()


def https_url(agent: Server) -> str:
    return next(line.split()[-1] for line in agent.output
                if line.startswith("xcp-httpd listening on https://"))


def log_in(page: Browser, password: str) -> None:
    page.wait(lambda: page.find("#password").is_displayed(), 30, "the login form")
    field = page.find("#password")
    field.clear()
    field.send_keys(password)
    page.click("#login")


def vm_row(uuid: str) -> str:
    return f'tr[data-vm="{uuid}"]'


def demo(api) -> tuple[str, str]:
    vm = api.VM.get_by_name_label("demo")[0]
    return vm, api.VM.get_uuid(vm)


def test_a_wrong_password_is_said_in_words(agent, page):
    page.get(agent.url + "/")
    log_in(page, "not-the-password")
    page.wait_text("#login-error", "Wrong password for root.")
    page.screenshot("01-wrong-password")
    assert page.driver.get_cookie("session_id") is None


def test_the_login_shows_the_host_its_storage_and_the_demo_vm(agent, page, api):
    log_in(page, agent.password)
    _, uuid = demo(api)
    page.wait(lambda: page.all(vm_row(uuid)), 30, "the demo VM's row")
    host = api.host.get_record(api.host.get_all()[0])
    page.wait_text("#host-name", host["name_label"])
    assert page.text("#host-address") == host["address"]
    assert "min" in page.text("#host-uptime") or " h" in page.text("#host-uptime")
    assert "Local storage" in page.text("#srs")
    # CPU and memory now come from the host's 5-second statistics
    page.wait(lambda: "%" in page.text("#host-cpu") and "GiB of" in page.text("#host-memory"),
              30, "the host's CPU and memory")
    assert page.text(vm_row(uuid) + " td.power") == "Halted"
    assert page.all(vm_row(uuid) + ' button[data-op="start"]')
    assert not page.all(vm_row(uuid) + ' button[data-op="clean_shutdown"]')  # not allowed now
    assert page.driver.get_cookie("session_id")["value"].startswith("OpaqueRef:")
    page.screenshot("02-host")
    page.driver.refresh()                     # a reload keeps the session (its cookie)
    page.wait(lambda: page.all(vm_row(uuid)), 30, "the VM list after a reload")
    assert not page.all("#login-form")


def test_the_start_button_turns_the_row_running_without_a_reload(page, api):
    vm, uuid = demo(api)
    page.js("window.stillTheSamePage = true")
    page.click(vm_row(uuid) + ' button[data-op="start"]')
    page.wait(lambda: page.text(vm_row(uuid) + " td.power") == "Running", 60, "Running")
    assert page.js("return window.stillTheSamePage === true")      # no reload happened
    assert api.VM.get_power_state(vm) == "Running"
    page.wait(lambda: page.all(vm_row(uuid) + ' button[data-op="clean_shutdown"]'), 30,
              "the shutdown button of a running VM")
    page.screenshot("03-running")


_LIT = """
    const c = document.querySelector('#console-screen canvas');
    if (!c || !c.width) return [0, 0];
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let lit = 0;
    const rows = new Set();        // text rows (16 pixels high in VGA text mode) with text
    for (let i = 0; i < d.length; i += 4) {
      if (d[i] > 100 || d[i + 1] > 100 || d[i + 2] > 100) {
        lit++;
        rows.add(Math.floor(i / 4 / c.width / 16));
      }
    }
    return [lit / (d.length / 4), rows.size];"""


def lit_fraction(page: Browser) -> float:
    """Of the noVNC canvas's pixels, the fraction that is not the dark background."""
    return page.js(_LIT)[0]


def text_rows(page: Browser) -> int:
    """How many of the screen's text rows show something."""
    return page.js(_LIT)[1]


def test_the_console_shows_the_guest_and_takes_what_is_typed(agent, page, api, tmp_path):
    vm, uuid = demo(api)
    serial = SerialConsole(agent, tmp_path / "home", "demo")
    try:
        serial.login()                        # booted: tty1 shows its login prompt by now
        page.click(vm_row(uuid) + " td.name a")
        page.click('a[data-tab="console"]')
        page.wait(lambda: page.find("#console-status").get_attribute("data-state")
                  == "connected", 30, "the console to connect")
        page.wait(lambda: 0 < lit_fraction(page) < 0.5, 30, "text on the guest's screen")
        assert page.find("#console-cad").is_enabled()
        canvas = page.find("#console-screen canvas")
        assert (canvas.get_attribute("width"), canvas.get_attribute("height")) == ("720", "400")
        page.screenshot("04-console")
        # type at the canvas as a person does; getty and login drop what came before they
        # asked, so log in and type until the command ran (the serial console asks the guest)
        for _ in range(15):
            canvas.click()
            canvas.send_keys("root\n")
            time.sleep(2)
            canvas.send_keys("hostname webtyped\n")
            time.sleep(1)
            if "webtyped" in serial.run("hostname", "hn"):
                break
        else:
            raise AssertionError("what was typed at the page's console never ran")
        canvas.send_keys("clear\n")
        page.wait(lambda: text_rows(page) == 1, 30, "the screen cleared to its prompt")
        # the command echoed on the first row, what it printed on the second, a new prompt
        canvas.send_keys("echo the-page-echoes\n")
        page.wait(lambda: text_rows(page) == 3, 30, "the echoed command and its output")
        page.screenshot("05-console-typed")
        # Ctrl-Alt-Del: the guest's init reboots it; the page opens the new console by itself
        domid = api.VM.get_domid(vm)
        page.click("#console-cad")
        page.wait(lambda: api.VM.get_domid(vm) not in (domid, "-1"), BOOT, "the reboot")
        page.wait(lambda: page.find("#console-status").get_attribute("data-state")
                  == "connected" and lit_fraction(page) > 0, BOOT, "the console again")
    finally:
        serial.close()


def test_the_statistics_tab_draws_the_last_minutes(page, api):
    _, uuid = demo(api)
    page.click('a[data-tab="statistics"]')
    # the VM has run for a while: several 5-second rows of CPU
    page.wait(lambda: int(page.find("#graph-cpu").get_attribute("data-points")) >= 3, 60,
              "points on the CPU graph")
    for graph in ("memory", "disk", "network"):
        assert page.all(f"#graph-{graph}")
    page.screenshot("06-statistics")
    before = page.find("#graph-cpu").get_attribute("data-points")
    page.wait(lambda: page.find("#graph-cpu").get_attribute("data-points") != before, 30,
              "the graph to take a new point (it refreshes every 5 s)")
    page.click('button[data-period="1y"]')
    page.wait(lambda: page.find("button.active[data-period='1y']"), 10, "the year's level")
    assert "error" not in (page.find("#stats-status").get_attribute("class") or "")


def make_xva(agent: Server, api, path: Path, mib: int) -> None:
    """An XVA of a halted VM with one disk of `mib` MiB of random data (it does not compress:
    the upload moves every byte), exported by the agent; the VM and disk are destroyed after."""
    template = api.VM.get_by_name_label("Debian Etch 4.0")[0]
    vm = api.VM.clone(template, "web-src")
    api.VM.set_is_a_template(vm, False)
    sr = api.pool.get_default_SR(api.pool.get_all()[0])
    vdi = api.VDI.create({"name_label": "web-src disk", "SR": sr, "virtual_size": str(mib << 20),
                          "type": "user", "sharable": False, "read_only": False,
                          "other_config": {}})
    session = XenAPI.Session(agent.url)
    session.xenapi.login_with_password("root", agent.password, "2.21", "tests")
    sid = session._session
    try:
        req = urllib.request.Request(f"{agent.url}/import_raw_vdi?vdi={vdi}&session_id={sid}",
                                     data=os.urandom(mib << 20), method="PUT")
        urllib.request.urlopen(req).read()
        api.VBD.create({"VM": vm, "VDI": vdi, "userdevice": "0", "bootable": True, "mode": "RW",
                        "type": "Disk", "empty": False, "other_config": {},
                        "qos_algorithm_type": "", "qos_algorithm_params": {}})
        with urllib.request.urlopen(f"{agent.url}/export?ref={vm}&session_id={sid}") as r, \
                open(path, "wb") as out:
            shutil.copyfileobj(r, out)
    finally:
        api.VM.destroy(vm)
        api.VDI.destroy(vdi)
        session.xenapi.session.logout()


def guests(api) -> dict[str, str]:
    return {r: v["name_label"] for r, v in api.VM.get_all_records().items()
            if not v["is_a_template"] and not v["is_control_domain"]
            and not v["is_a_snapshot"]}


def progress_seen(page: Browser, until_done, timeout: float) -> set[float]:
    seen: set[float] = set()
    deadline = time.monotonic() + timeout
    while not until_done():
        assert time.monotonic() < deadline, f"the import never finished: {page.text('body')}"
        bar = page.find("#import-progress")
        if bar.is_displayed():
            seen.add(round(float(bar.get_attribute("value")), 3))
        time.sleep(0.1)
    return seen


def test_an_import_through_the_page_moves_its_bar_and_adds_the_vm(agent, page, api, tmp_path):
    xva = tmp_path / "web-src.xva"
    make_xva(agent, api, xva, 24)
    before = guests(api)
    page.click('a[href="#/"]')
    page.find("#import-file").send_keys(str(xva))
    page.throttle_uploads(6 << 20)             # about 4 s: long enough to watch the bar
    try:
        page.click("#import-start")
        seen = progress_seen(page, lambda: "Imported" in page.text("#import-status"), 120)
    finally:
        page.throttle_uploads(None)
    assert [v for v in seen if 0 < v < 1], f"the bar never moved between 0 and 1: {seen}"
    new = set(guests(api)) - set(before)
    assert [guests(api)[r] for r in new] == ["web-src"]
    uuid = api.VM.get_uuid(new.pop())
    page.wait(lambda: page.all(vm_row(uuid)), 30, "the imported VM's row")
    assert "web-src" in page.text("#import-status")
    assert not [t for t in api.task.get_all_records().values() if t["status"] == "pending"]
    page.screenshot("07-imported")


def test_a_cancelled_import_leaves_nothing(agent, page, api, tmp_path):
    xva = tmp_path / "web-cancel.xva"
    make_xva(agent, api, xva, 24)
    before_vms, before_vdis = guests(api), set(api.VDI.get_all())
    page.find("#import-file").send_keys(str(xva))
    page.throttle_uploads(1 << 20)             # 24 s if nobody cancels it
    try:
        page.click("#import-start")
        page.wait(lambda: float(page.find("#import-progress").get_attribute("value")) > 0, 30,
                  "the upload to start")
        page.click("#import-cancel")
        page.wait_text("#import-status", "cancelled", 30)
    finally:
        page.throttle_uploads(None)
    page.screenshot("08-import-cancelled")
    assert guests(api) == before_vms
    assert set(api.VDI.get_all()) == before_vdis
    assert not [t for t in api.task.get_all_records().values() if t["status"] == "pending"]


def test_the_export_link_downloads_the_vm(page, api, downloads):
    vm = next(r for r, n in guests(api).items() if n == "web-src")
    uuid = api.VM.get_uuid(vm)
    page.click(vm_row(uuid) + " td.name a")
    page.click("#export")
    target = downloads / "web-src.xva"
    page.wait(lambda: target.exists() and not list(downloads.glob("*.crdownload")), 60,
              "the download")
    with tarfile.open(target) as t:
        assert t.getnames()[0] == "ova.xml"
    page.screenshot("09-vm-overview")


def test_a_failed_action_is_said_in_xes_words(page, api):
    """The imported VM's disk is random data: its bootloader finds nothing, and the page says
    so as xe would; the VM stays halted."""
    vm = next(r for r, n in guests(api).items() if n == "web-src")
    page.click('button[data-op="start"]')
    page.wait_text("#notice", "Start web-src failed:", 60)
    assert "bootloader found nothing to boot" in page.text("#notice")
    assert "(error code: BOOTLOADER_FAILED)" in page.text("#notice")
    assert api.VM.get_power_state(vm) == "Halted"
    page.screenshot("10-failed-start")
    page.click("#notice button.close")
    page.wait(lambda: not page.find("#notice").is_displayed(), 10, "the notice to close")


def test_an_expired_session_goes_back_to_the_login_form(agent, page, api):
    _, uuid = demo(api)
    page.click('a[href="#/"]')
    page.wait(lambda: page.all(vm_row(uuid)), 30, "the VM list")
    sid = page.driver.get_cookie("session_id")["value"]
    # as the agent's idle timeout would (plain XML-RPC: the SDK logs out only its own session)
    assert xmlrpc.client.ServerProxy(agent.url).session.logout(sid)["Status"] == "Success"
    page.wait_text("#login-error", "expired", 30)
    page.screenshot("11-expired")


def test_log_in_again_then_log_out(agent, page, api):
    log_in(page, agent.password)
    _, uuid = demo(api)
    page.wait(lambda: page.all(vm_row(uuid)), 30, "the VM list")
    sid = page.driver.get_cookie("session_id")["value"]
    page.click("#logout")
    page.wait(lambda: page.find("#login-form").is_displayed(), 30, "the login form")
    assert page.driver.get_cookie("session_id") is None
    answer = xmlrpc.client.ServerProxy(agent.url).session.get_this_host(sid, sid)
    assert answer["ErrorDescription"][0] == "SESSION_INVALID"     # logged out on the host too


def test_the_page_works_over_https_with_the_self_signed_certificate(agent, page, api):
    url = https_url(agent)
    page.get(url + "/")
    log_in(page, agent.password)
    _, uuid = demo(api)
    page.wait(lambda: page.all(vm_row(uuid)), 30, "the VM list over HTTPS")
    assert page.driver.get_cookie("session_id")["secure"] is True
    page.click(vm_row(uuid) + " td.name a")
    page.click('a[data-tab="console"]')
    page.wait(lambda: page.find("#console-status").get_attribute("data-state")
              == "connected", 30, "the console over wss://")
    page.screenshot("12-https-console")


def test_the_page_reached_only_its_own_host(agent, page):
    urls = [urllib.parse.urlsplit(u) for u in page.requested()]
    web = [u for u in urls if u.scheme in ("http", "https", "ws", "wss")]   # not chrome://
    paths = {u.path for u in web}
    assert {"/jsonrpc", "/console", "/rrd_updates", "/import",
            "/ui/vendor/novnc/core/rfb.js", "/ui/vendor/chart.js/chart.esm.js"} <= paths, paths
    assert {u.scheme for u in web if u.path == "/console"} == {"ws", "wss"}
    hosts = {u.netloc for u in web}
    assert hosts == {urllib.parse.urlsplit(agent.url).netloc,
                     urllib.parse.urlsplit(https_url(agent)).netloc}, hosts
    # what the console said: no script errors; of the failed requests, only the cancelled
    # import's answer (409 TASK_CANCELLED)
    errors = [e for e in page.logs() if e["level"] == "SEVERE"
              and not (e["source"] == "network" and "/import?task_id=" in e["message"]
                       and "409" in e["message"])]
    assert not errors, errors

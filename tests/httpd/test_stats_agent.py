"""Statistics with the agent in this process (build_app, real sockets), where a test needs a
second host record: /vm_rrd of a VM resident on another host we know answers 302 there."""

from __future__ import annotations

import asyncio
import base64

import aiohttp
import pytest

from httpd.web.appkeys import SERVICES
from tests.in_process import PASSWORD, running_agent


@pytest.fixture
async def agent_app(tmp_path):
    async with running_agent(tmp_path) as running:
        yield running


async def test_vm_rrd_of_a_vm_on_another_host_redirects(agent_app):
    app, urls = agent_app
    agent = app[SERVICES]
    http = next(u for u in urls if u.startswith("http://"))
    https_port = next(u for u in urls if u.startswith("https://")).rsplit(":", 1)[1]
    vm = agent.store.create("VM", {"name_label": "elsewhere", "power_state": "Running"})
    uuid = agent.store.get("VM", vm)["uuid"]
    basic = base64.b64encode(f"root:{PASSWORD}".encode()).decode()
    async with aiohttp.ClientSession(headers={"Authorization": f"Basic {basic}"}) as s:
        # running, but resident nowhere we know: the local (missing) file -> 404, no redirect
        async with s.get(f"{http}/vm_rrd?uuid={uuid}", allow_redirects=False) as r:
            assert r.status == 404
        other = agent.store.create("host", {"name_label": "other", "address": "192.0.2.7"})
        agent.store.update("VM", vm, {"resident_on": other})
        async with s.get(f"{http}/vm_rrd?uuid={uuid}&json=true",
                         allow_redirects=False) as r:
            assert r.status == 302
            assert r.headers["Location"] == \
                f"https://192.0.2.7:{https_port}/vm_rrd?uuid={uuid}&json=true"
        # credentials are checked before anything is said about the VM
        async with aiohttp.ClientSession() as anonymous:
            async with anonymous.get(f"{http}/vm_rrd?uuid={uuid}",
                                     allow_redirects=False) as r:
                assert r.status == 401
        # a host without an address cannot be pointed at: the local answer stands
        agent.store.update("host", other, {"address": ""})
        async with s.get(f"{http}/vm_rrd?uuid={uuid}", allow_redirects=False) as r:
            assert r.status == 404


async def test_collector_formats_rows_before_anyone_polls(tmp_path):
    """The warm-up follows the collector: after a few ticks the host's and dom0's newest rows
    are already text, though no /rrd_updates request came (a poll would only join them)."""
    async with running_agent(tmp_path, stats_interval=1) as (app, _):
        service = app[SERVICES].stats
        for _ in range(100):
            if service.ticks >= 3 and service.rrds.cache.nbytes():
                break
            await asyncio.sleep(0.1)
        assert service.ticks >= 3
        assert service.rrds.cache.nbytes() > 0        # formatted with no request made
        # and what one more warm-up leaves is nothing at all for a poll to format (unless a
        # tick came while it ran: then the next one catches up)
        for _ in range(5):
            await service.warm()
            left = service.rrds.warm_work(service.store.rrd_ids(), 5, "AVERAGE")
            if not left:
                break
        assert left == []

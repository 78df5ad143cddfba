"""A test double of the xapi HTTP-transfer PROTOCOL, for testing the `xe` client's side of it.

It is not a model of our server: it answers just the calls `xe vm-export`/`vm-import` make
(login, task.create/get_record/cancel/destroy, VM lookups) and serves `GET /export` and
`PUT /import` as the reference describes them (session_id + task_id in the query; the task, not
the HTTP status, carries the outcome; the import's task.result is the XML-RPC text of the new VM
refs). It records what the client sent so tests can check the client, byte for byte.
"""

from __future__ import annotations

import asyncio
import uuid as _uuid

from aiohttp import web

from httpd.wire.xmlrpc import dumps_response, failure, parse_call, success

PASSWORD = "double-pw"
SESSION = "OpaqueRef:double-session"
VM_UUID = "11111111-2222-3333-4444-555555555555"
NEW_UUID = "66666666-7777-8888-9999-000000000000"
SR_UUID = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"


class XapiDouble:
    def __init__(self, payload: bytes = b"", *, delay: float = 0.0,
                 import_error: list[str] | None = None) -> None:
        self.payload = payload
        self.delay = delay                     # seconds between 64 KiB export blocks
        self.import_error = import_error
        self.tasks: dict[str, dict] = {}
        self.vms = {"OpaqueRef:vm1": {"uuid": VM_UUID, "name_label": "exported",
                                      "is_a_template": False, "power_state": "Halted"}}
        self.calls: list[str] = []
        self.imported: bytes | None = None
        self.import_headers: dict[str, str] = {}
        self.import_query: dict[str, str] = {}
        self.export_query: dict[str, str] = {}
        self.export_started = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.port = 0

    # --- XML-RPC ------------------------------------------------------------------------------
    def _call(self, method: str, params: list) -> object:
        self.calls.append(method)
        if method == "session.login_with_password":
            if params[1] != PASSWORD:
                raise _Fail("SESSION_AUTHENTICATION_FAILED", params[0], "bad password")
            return SESSION
        if params[:1] != [SESSION]:
            raise _Fail("SESSION_INVALID", str(params[:1]))
        args = params[1:]
        if method == "session.logout":
            return ""
        if method == "task.create":
            ref = f"OpaqueRef:{_uuid.uuid4()}"
            self.tasks[ref] = {"uuid": str(_uuid.uuid4()), "name_label": args[0],
                               "status": "pending", "progress": 0.0, "result": "",
                               "error_info": [], "cancel": False}
            return ref
        if method.startswith("task."):
            task = self._task(args[0])
            if method == "task.get_record":
                return {k: v for k, v in task.items() if k != "cancel"}
            if method == "task.cancel":
                task["cancel"] = True
                if task["status"] == "pending":
                    task["status"] = "cancelling"
                return ""
            if method == "task.destroy":
                del self.tasks[args[0]]
                return ""
        if method == "VM.get_all_records":
            return self.vms
        if method == "VM.get_by_uuid":
            for ref, rec in self.vms.items():
                if rec["uuid"] == args[0]:
                    return ref
            raise _Fail("UUID_INVALID", "VM", args[0])
        if method in ("VM.get_record", "VM.get_uuid"):
            rec = self.vms.get(args[0])
            if rec is None:
                raise _Fail("HANDLE_INVALID", "VM", args[0])
            return rec if method == "VM.get_record" else rec["uuid"]
        if method == "VM.get_by_name_label":
            return [r for r, v in self.vms.items() if v["name_label"] == args[0]]
        if method == "SR.get_by_uuid":
            if args[0] != SR_UUID:
                raise _Fail("UUID_INVALID", "SR", args[0])
            return "OpaqueRef:sr"
        raise _Fail("MESSAGE_METHOD_UNKNOWN", method)

    def _task(self, ref: str) -> dict:
        if ref not in self.tasks:
            raise _Fail("HANDLE_INVALID", "task", ref)
        return self.tasks[ref]

    async def xmlrpc(self, request: web.Request) -> web.Response:
        method, params = parse_call(await request.read())
        try:
            env = success(self._call(method, params))
        except _Fail as e:
            env = failure(e.description)
        return web.Response(body=dumps_response(env), content_type="text/xml")

    def _authorised_task(self, request: web.Request) -> dict:
        if request.query.get("session_id") != SESSION:
            raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Basic realm="xapi"'})
        task = self.tasks.get(request.query.get("task_id", ""))
        if task is None:
            raise web.HTTPBadRequest(text="no task")
        return task

    # --- HTTP transfers -----------------------------------------------------------------------
    async def export(self, request: web.Request) -> web.StreamResponse:
        task = self._authorised_task(request)
        self.export_query = dict(request.query)
        if request.query.get("uuid") != VM_UUID:
            task.update(status="failure", error_info=["UUID_INVALID", "VM",
                                                      request.query.get("uuid", "")])
            return web.Response(status=404, text="UUID_INVALID VM\n",
                                headers={"X-XenAPI-Error": "UUID_INVALID"})
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.content_length = len(self.payload)
        await resp.prepare(request)
        self.export_started.set()
        for i in range(0, len(self.payload), 65536):
            if task["cancel"]:
                task.update(status="cancelled", error_info=["TASK_CANCELLED", "task"])
                return resp
            await resp.write(self.payload[i:i + 65536])
            task["progress"] = i / max(len(self.payload), 1)
            if self.delay:
                await asyncio.sleep(self.delay)
        await resp.write_eof()
        task.update(status="success", progress=1.0)
        return resp

    async def import_(self, request: web.Request) -> web.Response:
        task = self._authorised_task(request)
        self.import_query = dict(request.query)
        self.import_headers = dict(request.headers)
        body = bytearray()
        async for block in request.content.iter_chunked(65536):
            body += block
        self.imported = bytes(body)
        if self.import_error:
            task.update(status="failure", error_info=list(self.import_error))
            return web.Response(status=500, text=" ".join(self.import_error))
        self.vms["OpaqueRef:new"] = {"uuid": NEW_UUID, "name_label": "imported",
                                     "is_a_template": False, "power_state": "Halted"}
        task.update(status="success", progress=1.0,
                    result="<value><array><data><value>OpaqueRef:new</value></data>"
                           "</array></value>")
        return web.Response(status=200)

    # --- lifetime -----------------------------------------------------------------------------
    async def start(self) -> "XapiDouble":
        app = web.Application(client_max_size=2**30)
        app.add_routes([web.post("/", self.xmlrpc), web.get("/export", self.export),
                        web.put("/import", self.import_)])
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()

    def args(self, password: str = PASSWORD) -> list[str]:
        return ["-s", "127.0.0.1", "-p", str(self.port), "-u", "root", "-pw", password,
                "--nossl"]


class _Fail(Exception):
    def __init__(self, code: str, *params: str) -> None:
        self.description = [code, *params]

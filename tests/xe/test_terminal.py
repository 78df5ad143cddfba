"""xe as a person at a terminal sees it, in a real bash inside tmux (send-keys, capture-pane):
tab completion as readline inserts it, and vm-export's progress rising to 100% and a final
line."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
import uuid as uuidlib
from pathlib import Path

import pytest

import httpd.xe

from .conftest import XE

SCRIPT = Path(httpd.xe.__file__).parent / "xe-completion.bash"


class Tmux:
    """One tmux server of our own (-L) with a bash that has xe, its completion and the test
    server's socket."""

    def __init__(self, env: dict[str, str]) -> None:
        self.name = f"xe-{uuidlib.uuid4().hex[:8]}"
        self.env = env
        self._tmux("new-session", "-d", "-x", "200", "-y", "50", "-s", "t",
                   "bash --norc --noprofile")
        xe_dir = os.path.dirname(XE[0]) if len(XE) == 1 else ""
        self.type(f"export PS1='$ ' XE_SOCKET={shlex.quote(env['XE_SOCKET'])} "
                  f"PYTHONPATH={shlex.quote(env['PYTHONPATH'])} "
                  f"PATH={shlex.quote(xe_dir)}:$PATH; source {SCRIPT}; clear", enter=True)
        self.wait_for(lambda screen: screen.strip() == "$")

    def _tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.name, *args], capture_output=True, text=True,
                              check=True, timeout=30, env=self.env).stdout

    def type(self, keys: str, enter: bool = False) -> None:
        self._tmux("send-keys", "-t", "t", "-l", keys)
        if enter:
            self._tmux("send-keys", "-t", "t", "Enter")

    def tab(self) -> None:
        self._tmux("send-keys", "-t", "t", "Tab")

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "t")

    def wait_for(self, predicate, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if predicate(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"the terminal never showed it:\n{screen}")
            time.sleep(0.1)

    def last_line(self) -> str:
        lines = [ln for ln in self.screen().splitlines() if ln.strip()]
        return lines[-1] if lines else ""

    def clear(self) -> None:
        # a C-c that lands while a completion still runs stops only that completion (the
        # line stays): send it again until a fresh prompt is the last line
        deadline = time.monotonic() + 30
        while True:
            self._tmux("send-keys", "-t", "t", "C-c")
            try:
                self.wait_for(lambda screen: self.last_line().strip() == "$", timeout=2)
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
        self.type("clear", enter=True)
        self.wait_for(lambda screen: screen.strip() == "$")

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.name, "kill-server"], capture_output=True,
                       timeout=30)


@pytest.fixture
def term(xe):
    t = Tmux(xe.env)
    yield t
    t.close()


def test_completion_inserts_what_xe_takes(term, xe):
    u = xe.out("vm-install", "template=Debian Etch 4.0", "new-name-label=Web Server 1")
    try:
        # uuid=<Tab> completes the value, never a second '='
        term.type(f"xe vm-param-list uuid={u[:13]}")
        term.tab()
        term.wait_for(lambda s: s.rstrip().endswith(f"$ xe vm-param-list uuid={u}"))
        term.clear()
        term.type("xe vm-param-list uuid=")
        term.tab()
        time.sleep(1.0)
        assert "uuid==" not in term.screen()
        term.clear()
        # name-label=<Tab> offers the names; one with spaces goes in escaped, as one word
        term.type("xe vm-list name-label=Web")
        term.tab()
        term.wait_for(lambda s: s.rstrip().endswith("$ xe vm-list name-label=Web\\ Server\\ 1"))
        term.type("params=uuid --minimal", enter=True)      # after the space completion added
        term.wait_for(lambda s: s.strip().splitlines()[-2:] == [u, "$"])
        term.clear()
        term.type("xe vm-shutdown vm=Web")
        term.tab()
        term.wait_for(lambda s: s.rstrip().endswith("$ xe vm-shutdown vm=Web\\ Server\\ 1"))
    finally:
        xe("vm-uninstall", f"uuid={u}", "--force")


def test_vm_export_progress_rises_to_100_and_says_it_finished(term, xe, tmp_path):
    """A 1 GiB disk of data, exported to a reader that takes its time: the percentage is
    seen rising, then 100% and the final line."""
    u = xe.out("vm-install", "template=Debian Etch 4.0", "new-name-label=progress")
    try:
        vdi = xe.out("vm-disk-add", f"uuid={u}", "disk-size=1GiB", "device=1")
        location = xe.out("vdi-param-get", f"uuid={vdi}", "param-name=location")
        disk = next(xe.server.data_dir.glob(f"sr/*/{location}.raw"))
        subprocess.run(["dd", "if=/dev/urandom", f"of={disk}", "bs=4M", "count=256",
                        "conv=notrunc", "status=none"], check=True, timeout=120)
        slow = ("python3 -c 'import sys,time\n"
                "while sys.stdin.buffer.read(1 << 24): time.sleep(0.05)'")
        term.type(f"xe vm-export uuid={u} filename=- | {slow}", enter=True)
        seen: list[int] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            screen = term.screen()
            for line in screen.splitlines():
                if line.startswith("Exporting progress [") and "%" in line:
                    pct = int(line.split("]")[1].split("%")[0])
                    if not seen or seen[-1] != pct:
                        seen.append(pct)
            if "Exported VM progress to stdout: 1.0 GiB in " in screen:
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"no final line:\n{term.screen()}")
        assert seen[-1] == 100, seen
        assert len([p for p in seen if 0 < p < 100]) >= 2, seen      # it rose
        assert seen == sorted(seen), seen
    finally:
        xe("vm-uninstall", f"uuid={u}", "--force")

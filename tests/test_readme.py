"""The README runs top to bottom: every ```sh and ```python block, in order, verbatim, against an
agent started the way the README says (`make run`, from a temporary copy of the checkout),
with `PW` set from the password `make run` printed: the one line a reader fills in. The run
stops at the first command that exits non-zero; a traceback anywhere (an example's output or
the agent's log) fails it too.

Everything runs inside a network namespace of its own (`unshare --net`, loopback up): the
agent listens on the README's 127.0.0.1:8080 there and its guests' bridges live there, never
beside a real NIC. The copy shares this checkout's virtual environments (`.venv`,
`.venv-ansible`, XO's `node_modules`), whose stamps it keeps, so `make run` and the README's
`make -C $REPO ...` lines find them installed; the guest kernel `make run` would fetch on a
fresh data directory comes from the tests' cache (the same `apt-get download`).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import uuid
from pathlib import Path

import pytest

from httpd.backends.qemu.guest import fetch_kernel

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "tests" / ".cache" / "guest-kernel"
PW_LINE = "export PW=<the password printed by make run>"
SHARED = (".venv", ".venv-ansible", "tests/clients/xo/node_modules")
FENCE = re.compile(r"^( *)```(\w*)\s*$")


def blocks(text: str) -> list[tuple[str, int, str]]:
    """(language, line number, code) of each fenced block, indentation removed."""
    out, lang, start, indent, body = [], None, 0, 0, []
    for n, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if lang is None and m:
            lang, start, indent, body = m.group(2), n, len(m.group(1)), []
        elif lang is not None and m and len(m.group(1)) == indent and not m.group(2):
            out.append((lang, start, "\n".join(body) + "\n"))
            lang = None
        elif lang is not None:
            body.append(line[indent:])
    assert lang is None, f"README: the block opened on line {start} is never closed"
    return out


def script(readme: str) -> str:
    """The README's runnable blocks as one bash script (run from the copy's root)."""
    assert readme.count(PW_LINE) == 1, "the README sets PW in one line, as the test expects"
    parts = []
    for lang, line, code in blocks(readme):
        if lang == "sh":
            assert not re.search(r"&&|\|\|", code), \
                f"README line {line}: no && or || in a sh block (set -e would not see a failure)"
            code = code.replace(PW_LINE, 'export PW="$README_PW"')
            parts.append(f"echo '### README line {line}'\n{code}")
        elif lang == "python":
            parts.append(f"echo '### README line {line}'\npython3 <<'README_PY'\n{code}"
                         "README_PY\n")
        else:
            assert lang == "text", f"README line {line}: a block is sh, python or text"
    return "\n".join(parts)


def _copy_checkout(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if not src.is_file() or any(rel == s or rel.startswith(s + "/") for s in SHARED):
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)       # mtimes kept: make sees its stamps up to date
    for rel in SHARED:
        if (ROOT / rel).exists():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).symlink_to(ROOT / rel)


# every command of the examples must succeed: bash's set -e, which does not look inside a
# `a && b` list (so the README's sh blocks have none) nor at a pipeline's first commands
STRICT = """trap 'echo "### README command failed (exit $?): $BASH_COMMAND"' ERR
set -e
"""
HARNESS = r"""
ip link set lo up
cd "$COPY"
make run > make-run.log 2>&1 &
for _ in $(seq 1200); do
    grep -qx ready make-run.log && break
    kill -0 $! 2>/dev/null || { echo "make run stopped:"; cat make-run.log; exit 3; }
    sleep 0.5
done
grep -qx ready make-run.log || { echo "make run never said ready:"; cat make-run.log; exit 3; }
export README_PW=$(sed -n 's/^root password (first start, shown once): //p' make-run.log)
[ -n "$README_PW" ] || { echo "make run printed no password:"; cat make-run.log; exit 3; }
""" + STRICT


def _stop(copy: Path) -> None:
    """The agent (its pid is in the data directory's lock), then every process of the copy:
    guests and dnsmasq outlive the agent by design."""
    lock = copy / "var" / "agent.lock"
    try:
        pid = int(lock.read_text())
        os.kill(pid, signal.SIGTERM)
        for _ in range(200):
            os.kill(pid, 0)
            subprocess.run(["sleep", "0.1"])
    except (OSError, ValueError):
        pass
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if str(copy).encode() in (proc / "cmdline").read_bytes():
                os.kill(int(proc.name), signal.SIGKILL)
        except OSError:
            continue


@pytest.mark.skipif(shutil.which("unshare") is None, reason="util-linux is not installed")
def test_readme_runs_top_to_bottom():
    readme = (ROOT / "README.md").read_text()
    body = script(readme)
    # no underscore in the path: the SDK's local-socket URL maps '_' to '/'
    copy = Path("/tmp") / f"xcpreadme-{uuid.uuid4().hex}"
    copy.mkdir()
    try:
        _copy_checkout(copy)
        if shutil.which("qemu-system-x86_64"):
            fetch_kernel(CACHE)
            shutil.copytree(CACHE, copy / "var" / "guest" / "kernel")
        run = copy / "readme.sh"
        run.write_text(HARNESS + body + "\necho '### README done'\n")
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("XE", "VIRTUAL_ENV", "PYTHON"))}
        env.update(COPY=str(copy), HOME=str(copy / "home"))
        (copy / "home").mkdir()
        # into a file, not a pipe: what the examples leave running (the agent, a forwarder,
        # guests) would hold a pipe open after the script ended
        with open(copy / "readme.out", "wb") as sink:
            try:
                r = subprocess.run(["unshare", "--net", "--fork", "bash", str(run)], env=env,
                                   stdout=sink, stderr=subprocess.STDOUT, timeout=600,
                                   cwd=copy)
            finally:
                _stop(copy)
        out = (copy / "readme.out").read_text(errors="replace")
        log = (copy / "make-run.log").read_text(errors="replace")
        assert r.returncode == 0 and "### README done" in out, \
            f"{out[-6000:]}\n--- the agent's log:\n{log[-3000:]}"
        assert "Traceback" not in out, out[-6000:]
        assert "Traceback" not in log, log[-6000:]
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def test_every_block_is_sh_python_or_text():
    """A block without a language would be neither run nor said to be for reading only."""
    for lang, line, _ in blocks((ROOT / "README.md").read_text()):
        assert lang in ("sh", "python", "text"), f"README line {line}: ```{lang}"


def test_the_script_stops_at_the_first_failing_command(tmp_path):
    """The check itself: a failing example stops the run and is named."""
    readme = f"""```sh\n{PW_LINE}\necho one\nfalse\necho two\n```\n"""
    r = subprocess.run(["bash", "-c", STRICT + script(readme)], capture_output=True, text=True,
                       timeout=30, cwd=tmp_path)
    assert r.returncode != 0
    assert "one" in r.stdout and "two" not in r.stdout
    assert "### README command failed (exit 1): false" in r.stdout

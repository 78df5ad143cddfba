"""`xe`: the XenAPI command-line client (the SDK guide's chapter 4, issue 7).

    xe [-s server] [-p port] [-u user] [-pw password | -pwf file] [--nossl] [--no-verify]
       <command> [name=value ...] [--flag ...]

With no server (here or in ~/.xe) it talks to the local Unix socket ($XE_SOCKET, ./var/xapi.sock,
/var/lib/xcp/xapi) as root; with one, HTTPS unless --nossl. `xe help [command]` explains each
command; `xe-completion.bash` next to this file gives bash tab completion.
"""

from __future__ import annotations

import shlex
import sys
from typing import Sequence

from .client import ApiFailure, Endpoint, XeError, read_rc
from .core import COMMANDS, Command, Ctx, UsageError, class_of
from .errors import describe
from .fields import find_param, params_of, xe_class_name

__all__ = ["main", "parse_argv", "complete"]

_VALUE_OPTS = {"-s": "server", "-p": "port", "-u": "username", "-pw": "password",
               "-pwf": "passwordfile"}
_CONN_FLAGS = {"nossl", "no-verify"}
_loaded = False


def _load() -> None:
    global _loaded
    if _loaded:
        return
    from . import console, devices, pool, storage, transfer, vm  # noqa: F401 - they register
    from .generic import register_all
    register_all()
    _loaded = True


class Invocation:
    def __init__(self) -> None:
        self.command: str | None = None
        self.extra: list[str] = []
        self.params: dict[str, str] = {}
        self.flags: set[str] = set()
        self.opts: dict[str, str] = {}


def parse_argv(argv: Sequence[str]) -> Invocation:
    inv = Invocation()
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in _VALUE_OPTS:
            if i + 1 >= len(argv):
                raise UsageError(f"option {a} needs a value")
            inv.opts[_VALUE_OPTS[a]] = argv[i + 1]
            i += 2
            continue
        if a in ("-h", "--help"):
            if inv.command:
                inv.extra.insert(0, inv.command)
            inv.command = "help"
        elif a.startswith("--") and len(a) > 2:
            name = a[2:]
            if "=" in name:
                k, _, v = name.partition("=")
                inv.params[k] = v
            elif name in _CONN_FLAGS:
                inv.opts[name] = "true"
            else:
                inv.flags.add(name)
        elif "=" in a and not a.startswith("="):
            k, _, v = a.partition("=")
            inv.params[k] = v
        elif inv.command is None:
            inv.command = a
        else:
            inv.extra.append(a)
        i += 1
    return inv


def _usage() -> str:
    return ("Usage: xe [-s server] [-p port] [-u user] [-pw password | -pwf file] [--nossl] "
            "[--no-verify]\n          <command> [name=value ...] [--minimal] [--force]\n"
            "Run 'xe help' for the commands, 'xe help <command>' for one command.")


def _help(inv: Invocation, out) -> int:
    visible = sorted(n for n, c in COMMANDS.items() if not c.hidden)
    topic = inv.extra[0] if inv.extra else None
    if topic:
        cmd = COMMANDS.get(topic)
        if cmd is None:
            raise _unknown(topic)
        out.write(cmd.usage() + "\n")
        return 0
    if "minimal" in inv.flags:
        out.write(",".join(visible) + "\n")
        return 0
    out.write(_usage() + "\n\nCommands:\n")
    width = max(len(n) for n in visible) + 2
    cols = max(1, 100 // width)
    for i in range(0, len(visible), cols):
        out.write("  " + "".join(n.ljust(width) for n in visible[i:i + cols]).rstrip() + "\n")
    return 0


def _unknown(name: str) -> XeError:
    import difflib              # only for a mistyped command: kept out of xe's start

    close = difflib.get_close_matches(name, list(COMMANDS), n=3)
    hint = f" (did you mean: {', '.join(close)}?)" if close else ""
    return XeError(f"Unknown command: {name}{hint}\nFor usage run: 'xe help'")


def _check(cmd: Command, inv: Invocation) -> None:
    missing = [r for r in cmd.reqd if not inv.params.get(r)]
    if missing:
        raise UsageError(f"{cmd.name} needs the parameter(s): {', '.join(missing)}", cmd.name)
    if cmd.free or cmd.selector:
        return
    known = set(cmd.reqd) | set(cmd.optn) | set(cmd.flags)
    unknown = [k for k in inv.params if k not in known]
    if unknown:
        raise UsageError(f"unknown parameter(s) for {cmd.name}: {', '.join(unknown)}", cmd.name)


def run(argv: Sequence[str], out=None, err=None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    _load()
    if len(argv) >= 1 and argv[0] == "complete":
        line = argv[1] if len(argv) > 1 else ""
        out.write("".join(c + "\n" for c in for_readline(line, complete(line))))
        return 0
    inv = parse_argv(argv)
    if inv.command is None:
        err.write(_usage() + "\n")
        return 1
    if inv.command == "help":
        return _help(inv, out)
    cmd = COMMANDS.get(inv.command)
    if cmd is None:
        raise _unknown(inv.command)
    if inv.extra:
        raise UsageError(f"unexpected argument(s): {' '.join(inv.extra)} (parameters are "
                         f"name=value)", cmd.name)
    _check(cmd, inv)
    endpoint = Endpoint.from_options(inv.opts, read_rc())
    ctx = Ctx(endpoint, cmd, inv.params, inv.flags, out, err)
    try:
        status = cmd.run(ctx)
    finally:
        try:
            ctx.close()
        except XeError:
            pass
    return int(status or 0)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        status = run(args)
        sys.stdout.flush()
        return status
    except XeError as e:
        sys.stdout.flush()
        sys.stderr.write(e.message + "\n")
        return e.status
    except ApiFailure as e:
        sys.stdout.flush()
        sys.stderr.write(describe(e.code, e.params) + "\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("\nInterrupted\n")
        return 130
    except BrokenPipeError:
        return 1


# --- bash completion ------------------------------------------------------------------------------

def complete(line: str) -> list[str]:
    """Candidates for the last word of `line` (the command line up to the cursor)."""
    _load()
    try:
        words = shlex.split(line)
    except ValueError:
        words = line.split()
    if line and not line[-1].isspace():
        cur = words.pop() if words else ""
    else:
        cur = ""
    words = words[1:]   # the program name
    inv = parse_argv(words)
    if words and words[-1] in _VALUE_OPTS:
        return []
    if inv.command is None:
        if cur.startswith("-"):
            return [o for o in (*_VALUE_OPTS, "--nossl", "--no-verify") if o.startswith(cur)]
        return sorted(n for n, c in COMMANDS.items() if n.startswith(cur) and not c.hidden)
    if inv.command == "help":
        return sorted(n for n in COMMANDS if n.startswith(cur))
    cmd = COMMANDS.get(inv.command)
    if cmd is None:
        return []
    cls = cmd.cls or cmd.selector
    if "=" in cur:
        key, _, part = cur.partition("=")
        return [f"{key}={v}" for v in _values(cmd, cls, key, part, inv) if v.startswith(part)]
    names = list(cmd.reqd) + list(cmd.optn)
    if cls and (cmd.free or cmd.selector):
        names += [p.name for p in params_of(cls)]
        if cmd.selector == "VM":
            names.append("vm")
        if "-list" in cmd.name:
            names.append("params")
    seen = set(inv.params)
    out = [f"{n}=" for n in dict.fromkeys(names) if n not in seen and f"{n}=".startswith(cur)]
    out += [f"--{f}" for f in cmd.flags if f"--{f}".startswith(cur) and f not in inv.flags]
    return out


_SHELL_SPECIAL = set(" \t'\"\\$`!&;|<>()*?[]{}#~")


def _word_starts(line: str) -> tuple[int, int]:
    """(where the last shell word of `line` starts, where the word readline replaces starts:
    after the last unquoted space, '=' or ':', which bash's COMP_WORDBREAKS hold)."""
    word = rl = i = 0
    quote = None
    while i < len(line):
        ch = line[i]
        if quote:
            if ch == quote:
                quote = None
            elif ch == "\\" and quote == '"':
                i += 1
        elif ch == "\\":
            i += 1
        elif ch in "'\"":
            quote = ch
        elif ch in " \t\n":
            word = rl = i + 1
        elif ch in "=:":
            rl = i + 1
        i += 1
    return word, rl


def for_readline(line: str, candidates: list[str]) -> list[str]:
    """Candidates (whole words, as `complete` gives them) as readline inserts them: only the
    part after the last '=' or ':' of the word (`uuid=<Tab>` must not become `uuid==`), with
    spaces and shell characters escaped (a VM name with spaces stays one word)."""
    word, rl = _word_starts(line)
    typed = line[word:rl]
    try:
        prefix = "".join(shlex.split(typed)) if typed else ""
    except ValueError:
        prefix = typed
    quoted = any(q in line[word:] for q in "'\"")
    out = []
    for c in candidates:
        tail = c[len(prefix):] if c.startswith(prefix) else c
        out.append(tail if quoted else "".join("\\" + ch if ch in _SHELL_SPECIAL else ch
                                               for ch in tail))
    return out


def _values(cmd: Command, cls: str | None, key: str, part: str, inv: Invocation) -> list[str]:
    if key == "class":
        from ..model.datamodel import CLASSES
        return sorted(xe_class_name(c) for c in CLASSES)
    if key in ("params", "param-name") and cls:
        names = [p.name for p in params_of(cls)]
        if key == "params":
            head, _, _ = part.rpartition(",")
            prefix = head + "," if head else ""
            return [prefix + n for n in ["all", *names]]
        return names
    if key in ("force", "minimal", "multiple", "paused", "preserve", "bootable", "sharable",
               "read-only", "compress"):
        return ["true", "false"] + (["gzip", "zstd"] if key == "compress" else [])
    if key == "name-label" and cls and "name_label" in _classes()[cls].by_name:
        recs = _records(inv, cls)
        if cls == "VM":           # VMs or templates, as the command works on
            templates = cmd.name.startswith("template")
            recs = [r for r in recs if bool(r.get("is_a_template")) == templates]
        return sorted({r["name_label"] for r in recs})
    target = None
    if key == "uuid" and cls:
        target = cls
    elif key.endswith("-uuid"):
        target = class_of(key[:-5])
    elif key in ("vm", "template"):
        target = "VM"
    if target is None:
        if cls:
            p = find_param(cls, key)
            from ..model.xtypes import Enum, BOOL
            if p is not None and isinstance(p.spec.xtype, Enum):
                return [v.lower() for v in p.spec.xtype.values]
            if p is not None and p.spec.xtype is BOOL:
                return ["true", "false"]
        return []
    recs = _records(inv, target)
    vals = [r["uuid"] for r in recs]
    if key in ("vm", "template") and "name_label" in _classes()[target].by_name:
        vals += [r["name_label"] for r in recs
                 if bool(r.get("is_a_template")) == (key == "template")]
    return vals


def _classes():
    from ..model.datamodel import CLASSES
    return CLASSES


def _records(inv: Invocation, cls: str) -> list[dict]:
    """Every record of `cls` on the server the command line names ([] if it cannot say)."""
    try:
        from .client import Session
        ep = Endpoint.from_options(inv.opts, read_rc())
        ep.timeout = 3.0
        if ep.password is None and not ep.is_local:
            return []
        s = Session(ep).login()
        try:
            return list(dict(s.call(f"{cls}.get_all_records")).values())  # type: ignore
        finally:
            s.logout()
    except (XeError, ApiFailure, OSError):
        return []

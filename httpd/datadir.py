"""One agent per data directory: an exclusive lock on `<data dir>/agent.lock`, held while the
agent runs.

Two agents on one directory would share its database and its sockets: the second would
remove the first one's Unix socket and mark the first one's running VMs Halted. The lock is
`flock` on a file that names the holder's pid; the kernel drops it when the holder exits,
however it ends (`kill -9` included), so a stale file never blocks a start. The descriptor is
close-on-exec: the guests the agent starts do not inherit it, and `host.restart_agent`'s exec
takes it again.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

__all__ = ["DataDirInUse", "lock_data_dir"]


class DataDirInUse(Exception):
    """Another running agent holds the data directory; the message is the one line to show."""


def lock_data_dir(data_dir: Path) -> IO[str]:
    """Hold `data_dir`'s lock (returns the open file: closing it releases the lock), or
    DataDirInUse naming the pid that holds it."""
    path = data_dir / "agent.lock"
    f = open(path, "a+", encoding="ascii")         # a+: never truncates the holder's pid
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        raise DataDirInUse(f"{data_dir} is in use by another agent (pid {holder}); stop it "
                           "or give this one another --data-dir") from None
    except BaseException:
        f.close()
        raise
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f

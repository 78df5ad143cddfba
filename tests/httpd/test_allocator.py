"""The allocator keeps transfer-sized buffers (httpd.allocator): with the tuning, a 16 MiB buffer
comes from the heap, not from a mapping of its own (no new line in /proc/self/maps), and once
freed it is reused as it is, without the kernel faulting in and zeroing its pages again.
glibc's default does the opposite on the first buffers, and later decides by timing (a dense 1
GiB export here: 190k minor faults by default, 16k tuned)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_PROBE = """
import resource, sys
sys.path.insert(0, {root!r})
if sys.argv[1] == "tuned":
    from httpd.allocator import keep_big_buffers
    assert keep_big_buffers()
maps = lambda: len(open("/proc/self/maps").readlines())
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
size = 16 << 20
before = maps()
a = bytearray(size)
a[::4096] = b"x" * len(a[::4096])
mapped = maps() - before
del a
f0 = faults()
b = bytearray(size)
b[::4096] = b"x" * len(b[::4096])
print(mapped, faults() - f0)
"""


def _probe(mode: str) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", _PROBE.format(root=str(ROOT)), mode],
                         check=True, capture_output=True, text=True).stdout.split()
    return int(out[0]), int(out[1])


def test_big_buffers_come_from_the_heap_and_are_reused_without_faults():
    pages = (16 << 20) // 4096
    _, refaulted = _probe("default")
    assert refaulted > pages // 2           # mapped, unmapped at free: the next is fresh pages
    mapped, refaulted = _probe("tuned")
    assert mapped == 0 and refaulted < pages // 20      # the heap, then the same pages


_TRIM = """
import sys
sys.path.insert(0, {root!r})
from httpd.allocator import give_back_free_memory, keep_big_buffers
assert keep_big_buffers()
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * 4096 >> 20
bufs = [bytearray(4 << 20) for _ in range(16)]
for b in bufs:
    b[::4096] = b"x" * len(b[::4096])
kept = bufs[::5]                        # in use, spread over the heap: it cannot just shrink
del bufs
held = rss()
assert give_back_free_memory()
print(held, rss())
"""


def test_free_memory_a_transfer_left_goes_back_after_it():
    """After each transfer the agent gives the arenas' free pages back (malloc_trim), so the
    tuning above keeps buffers within a transfer, not between transfers."""
    held, after = map(int, subprocess.run(
        [sys.executable, "-c", _TRIM.format(root=str(ROOT))], check=True, capture_output=True,
        text=True).stdout.split())
    assert held - after >= 32               # of the ~48 MiB freed in the heap's middle

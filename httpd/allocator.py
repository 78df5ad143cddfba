"""glibc's malloc, told to keep the multi-MiB buffers a transfer goes through.

Exports and imports pass every byte through buffers of 1 to 8 MiB (disk reads, tar and gzip
members, zstd frames).  By default glibc serves such sizes with mmap and gives them back at
free, or trims the heap top, so each new buffer is fresh pages the kernel must fault in and
zero: measured here, 40-60 % of a dense export's CPU.  Raising the mmap threshold above those
sizes and the trim threshold above what a transfer holds lets freed buffers be reused as they
are.  Memory stays bounded: the threads share two arenas (glibc's default is up to eight per
core, each keeping its own free memory), and when a transfer ends the agent gives every
arena's free pages back (:func:`give_back_free_memory`), so the next transfer starts from what
is in use, not from the high-water mark of all before it (a 1 GiB import, then an export:
7-83 MiB of growth each instead of 79-115 MiB creeping up; ~6 ms per 140 MiB given back).
"""

from __future__ import annotations

__all__ = ["keep_big_buffers", "give_back_free_memory"]

_M_TRIM_THRESHOLD = -1          # mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
MMAP_THRESHOLD = 32 << 20       # above every transfer buffer
TRIM_THRESHOLD = 32 << 20       # free heap an arena keeps before it gives it back
ARENA_MAX = 2                   # arenas (each keeps up to TRIM_THRESHOLD): threads share them


def _libc(name: str, argtypes: tuple, restype):
    """A function of the C library this process runs on, or None where it has none (not glibc).
    ctypes is imported on first use: xe imports this module, and most commands never call it."""
    import ctypes

    try:
        fn = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = argtypes, restype
    return fn


def keep_big_buffers(mmap_threshold: int = MMAP_THRESHOLD,
                     trim_threshold: int = TRIM_THRESHOLD, arenas: int = ARENA_MAX) -> bool:
    """Tune malloc for this process; False where the C library has no mallopt (not glibc)."""
    import ctypes

    mallopt = _libc("mallopt", (ctypes.c_int, ctypes.c_int), ctypes.c_int)
    return bool(mallopt and mallopt(_M_ARENA_MAX, arenas)
                and mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
                and mallopt(_M_TRIM_THRESHOLD, trim_threshold))


def give_back_free_memory() -> bool:
    """Return the free pages every arena holds to the kernel (``malloc_trim(0)``: the whole
    free chunks, not only the heap's top), so what one transfer left free is not counted
    against the next; a transfer's buffers are reused within it all the same.  False where
    the C library has no malloc_trim."""
    import ctypes

    trim = _libc("malloc_trim", (ctypes.c_size_t,), ctypes.c_int)
    if trim is None:
        return False
    trim(0)
    return True

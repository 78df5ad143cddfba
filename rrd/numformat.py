"""Vectorised ``%.15g`` text for big blocks of doubles (rrd_updates rows).

A Python call per value costs about a microsecond; a 1,000-VM rrd_updates
has over a million values.  Here each value becomes 15 decimal digits and an
exponent with numpy arithmetic, and the text is laid out by table lookup:

1. ``N = round(|x| * 10**(14-e))`` with ``e = floor(log10|x|)``.  The product
   is computed exactly as ``hi + lo`` (Dekker's two-product; 10**k is exact
   for k <= 22) so the rounding (half to even on exact ties) is the correctly
   rounded one printf uses.
2. Digits of ``N`` come from a 5-digit lookup table; trailing zeros give the
   number of significant digits ``s``.
3. ``(sign, e, s)`` picks a pattern: which digit or constant byte goes at
   each output position and how long the text is.  One ``take`` builds every
   value's bytes, one boolean mask drops the padding.

Values this cannot do exactly (|x| < 1e-8 or >= 1e15) are left to the
caller's per-value path: :func:`format_rows` reports them per row.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["format_rows", "SPECIALS"]

# Spellings of the values that are not ordinary numbers (rrd_updates format).
SPECIALS = ("0.0", "-0.0", "NaN", "Infinity", "-Infinity")

_E_MIN, _E_MAX = -8, 14  # decimal exponents handled here
_N_E = _E_MAX - _E_MIN + 1
_N_FAST = 2 * _N_E * 15
_POW10 = np.array([10.0 ** i for i in range(23)])  # exact doubles
_SPLITTER = 134217729.0  # 2**27 + 1
_DIGIT_AT = np.array([8 * (i // 5) + i % 5 for i in range(15)])  # digit i's byte in a row


def _split(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = _SPLITTER * a
    hi = c - (c - a)
    return hi, a - hi


_P_HI, _P_LO = _split(_POW10)


def _scaled(ax: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``ax * 10**k`` as ``hi + lo`` exactly (0 <= k <= 22, no overflow)."""
    hi = ax * _POW10[k]
    ah, al = _split(ax)
    ph, pl = _P_HI[k], _P_LO[k]
    lo = ((ah * ph - hi) + ah * pl + al * ph) + al * pl
    return hi, lo


@lru_cache(maxsize=1)
def _lut5() -> np.ndarray:
    """ASCII digits of 0..99999, five per 8-byte word (gathered as uint64)."""
    n = np.arange(100000)
    lut = np.zeros((100000, 8), np.uint8)
    for i in range(5):
        lut[:, i] = (n // 10 ** (4 - i)) % 10 + 48
    return lut.view(np.uint64).ravel()


def _number_text(neg: bool, e: int, s: int) -> list[int | str]:
    """The text of ``(sign, exponent, significant digits)`` as ``%.15g``
    prints it; ints are digit positions 0..14, strings are literal bytes."""
    out: list[int | str] = ["-"] if neg else []
    if e >= 0:
        out += list(range(e + 1))
        if s - 1 > e:
            out += ["."] + list(range(e + 1, s))
    elif e >= -4:
        out += ["0", "."] + ["0"] * (-e - 1) + list(range(s))
    else:
        out += [0] + (["."] + list(range(1, s)) if s > 1 else []) + list(f"e-{-e:02d}")
    return out


@lru_cache(maxsize=1)
def _patterns():
    """Per pattern id: source byte index per output byte, and the byte length.

    Ids ``0.._N_FAST-1`` are ``((neg*_N_E) + e-_E_MIN)*15 + s-1``; then one
    per entry of :data:`SPECIALS`; the last id marks a value left to the
    caller (empty text).  Every text ends with one space, the separator the
    caller turns into the real wrapping with a C-level ``bytes.replace``.
    """
    texts: list[list[int | str]] = []
    for neg in (False, True):
        for e in range(_E_MIN, _E_MAX + 1):
            for s in range(1, 16):
                texts.append(_number_text(neg, e, s) + [" "])
    texts += [list(t) + [" "] for t in SPECIALS]
    texts.append([])
    consts = sorted({c for t in texts for c in t if isinstance(c, str)})
    width = max(len(t) for t in texts)
    index = np.zeros((len(texts), width), np.intp)
    length = np.array([len(t) for t in texts], np.intp)
    for i, t in enumerate(texts):
        index[i, : len(t)] = [_DIGIT_AT[c] if isinstance(c, int) else 24 + consts.index(c)
                              for c in t]
    return index, length, np.frombuffer("".join(consts).encode(), np.uint8)


@lru_cache(maxsize=1)
def _trailing_zeros5() -> np.ndarray:
    """Trailing zero digits of each 5-digit chunk (5 for 00000)."""
    n = np.arange(100000)
    tz = np.zeros(100000, np.int64)
    for j in range(1, 6):
        tz += (n % 10 ** j) == 0
    return tz


def format_rows(block: np.ndarray, open_: bytes, close: bytes, sep: bytes
                ) -> tuple[list[bytes], np.ndarray]:
    """Text of each row of ``block``: ``open+value+close`` joined by ``sep``.

    Returns the rows and a boolean per row telling whether it holds a value
    outside the exact range (that row's text is then incomplete and must be
    formatted another way).
    """
    rows, cols = block.shape
    x = np.ascontiguousarray(block, dtype=np.float64).ravel()
    index, length, consts = _patterns()
    n = x.size
    ax = np.abs(x)
    neg = np.signbit(x)
    with np.errstate(all="ignore"):
        fast = (ax >= 1e-8) & (ax < 1e15)
        axf = np.where(fast, ax, 1.0)
        k = np.clip(_E_MAX - np.floor(np.log10(axf)).astype(np.int64), 0, 22)
        hi, _ = _scaled(axf, k)  # log10 may be one off near powers of ten: fix by range
        e = _E_MAX - k + (hi >= 1e15).astype(np.int64) - (hi < 1e14)
        k = _E_MAX - e
        fast &= (k >= 0) & (k <= 22)
        hi, lo = _scaled(axf, np.clip(k, 0, 22))
    whole = np.floor(hi)
    frac = hi - whole
    odd = (whole.astype(np.int64) & 1) == 1
    up = (frac > 0.5) | ((frac == 0.5) & ((lo > 0) | ((lo == 0) & odd)))
    digits_n = whole + up
    carry = digits_n >= 1e15
    digits_n = np.where(carry, 1e14, digits_n).astype(np.int64)
    e += carry
    fast &= (e >= _E_MIN) & (e <= _E_MAX)

    src = np.empty((n, 24 + consts.size), np.uint8)  # 3 words of 5 digits, constants
    top, rest = np.divmod(np.where(fast, digits_n, 0), 10 ** 10)
    mid, low = np.divmod(rest, 10 ** 5)
    lut = _lut5()
    words = src[:, :24].view(np.uint64)
    words[:, 0] = lut.take(top)
    words[:, 1] = lut.take(mid)
    words[:, 2] = lut.take(low)
    src[:, 24:] = consts
    tz5 = _trailing_zeros5()
    sig = 15 - np.where(low != 0, tz5[low], np.where(mid != 0, 5 + tz5[mid], 10 + tz5[top]))

    pid = ((neg * _N_E) + (np.clip(e, _E_MIN, _E_MAX) - _E_MIN)) * 15 + (sig - 1)
    special = np.full(n, len(SPECIALS), np.intp)  # "left to the caller"
    special[x == 0] = 0
    special[(x == 0) & neg] = 1
    special[np.isnan(x)] = 2
    special[x == np.inf] = 3
    special[x == -np.inf] = 4
    pid = np.where(fast, pid, _N_FAST + special)

    width = index.shape[1]
    flat_index = index[pid] + (np.arange(n, dtype=np.intp) * src.shape[1])[:, None]
    cells = src.ravel().take(flat_index)
    lens = length[pid]
    text = cells[np.arange(width) < lens[:, None]].tobytes()

    row_lens = lens.reshape(rows, cols).sum(axis=1)
    ends = np.cumsum(row_lens).tolist()
    starts = [0] + ends[:-1]
    between = close + sep + open_
    out = [open_ + text[a: b - 1].replace(b" ", between) + close if b > a else b""
           for a, b in zip(starts, ends)]
    return out, (pid == _N_FAST + len(SPECIALS)).reshape(rows, cols).any(axis=1)

from xva.zeros import is_zero, zero_spans


def test_is_zero():
    assert is_zero(bytes(5000)) and is_zero(memoryview(bytes(5000))) and is_zero(b"")
    assert not is_zero(bytes(4999) + b"\1")
    assert not is_zero(memoryview(b"\1" + bytes(3 << 20)))


def test_zero_spans_break_only_at_aligned_granules():
    g = 4096
    data = bytearray(10 * g)
    data[g + 5] = 1                          # in the granule at disk offsets [g, 2g)
    runs = zero_spans(g - 100, bytes(data), granule=g)
    assert runs[0] == (0, 100, True)         # the unaligned head is its own piece
    assert runs[1] == (100, g, False)
    assert runs[2] == (100 + g, 9 * g - 100, True)
    assert sum(r[1] for r in runs) == len(data)
    assert all(not any(data[s:s + n]) for s, n, z in runs if z)
    assert zero_spans(0, b"") == []
    assert zero_spans(7, b"\0\0\1", granule=g) == [(0, 3, False)]

"""The vectorised %.15g against Python's own formatting, value by value."""

from __future__ import annotations

import numpy as np
import pytest

from rrd.numformat import format_rows
from rrd.render import format_value

EDGES = [0.0, -0.0, np.nan, np.inf, -np.inf, 1e-8, -1e-8, 0.5, 1.5, 2.5, 1e14, 1e-4, 1e-5,
         999999999999999.4, 99999999999999.95, 0.1 + 0.2, 123456.789,
         0.000123456789012345678, 1.5e-7, 9.9999999999999999e-5, 99999.99999999999, 5.0,
         -7.25e-6, 3.0000000000000004, 1e15 - 1, 2.0 ** 49 + 0.5]


def _expected(row, open_="<v>", close="</v>", sep=""):
    return sep.join(f"{open_}{format_value(v)}{close}" for v in row.tolist()).encode()


def _values(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = 20000
    parts = [rng.random(n), rng.normal(0, 1e6, n), np.round(rng.random(n), 3),
             10 ** rng.uniform(-8, 15, n) * rng.choice([-1, 1], n),
             rng.integers(0, 10 ** 15, n).astype(float),
             # exact ties (16th significant digit a 5, nothing after): half to even
             rng.integers(10 ** 14, 10 ** 15, n) + 0.5,
             rng.integers(10 ** 12, 10 ** 13, n) + rng.choice([0.125, 0.375, 0.625, 0.875], n)]
    x = np.concatenate(parts)
    return x[np.abs(x) < 1e15].reshape(-1, 100)[:1000]


@pytest.mark.parametrize("seed", [1, 2])
def test_matches_percent_g_on_random_values(seed):
    x = _values(seed)
    texts, incomplete = format_rows(x, b"<v>", b"</v>", b"")
    assert not incomplete.any()
    for row, text in zip(x, texts):
        assert text == _expected(row)


def test_ties_round_half_to_even():
    x = np.array([[123456789012345.5, 123456789012344.5, 1234567890123.125, 0.5, 2.5]])
    (text,), _ = format_rows(x, b"<v>", b"</v>", b"")
    assert text == (b"<v>123456789012346</v><v>123456789012344</v><v>1234567890123.12</v>"
                    b"<v>0.5</v><v>2.5</v>")


def test_edges_and_json_wrapping():
    x = np.array([EDGES])
    (text,), incomplete = format_rows(x, b'"', b'"', b",")
    assert not incomplete.any()
    assert text == _expected(x[0], '"', '"', ",")
    assert text.startswith(b'"0.0","-0.0","NaN","Infinity","-Infinity","1e-08"')


def test_out_of_range_rows_are_flagged():
    # 999999999999999.5 rounds up to 1e+15: out of range only after rounding
    x = np.array([[1.0, 2.0], [1e15, 1.0], [3e-9, 0.0], [1e300, 5e-324],
                  [999999999999999.5, 1.0]])
    texts, incomplete = format_rows(x, b"<v>", b"</v>", b"")
    assert incomplete.tolist() == [False, True, True, True, True]
    assert texts[0] == b"<v>1</v><v>2</v>"

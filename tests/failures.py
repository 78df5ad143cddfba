"""The XenAPI failure a call must end in, through the SDK."""

from __future__ import annotations

import pytest
import XenAPI

__all__ = ["fails"]


def fails(code: str, fn, *args) -> list[str]:
    """Call fn(*args); it must raise XenAPI.Failure with `code`; its details are returned."""
    with pytest.raises(XenAPI.Failure) as e:
        fn(*args)
    assert e.value.details[0] == code, e.value.details
    return e.value.details

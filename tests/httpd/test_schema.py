"""The datamodel's declarations are read as written; a malformed one fails at import."""

from __future__ import annotations

import pytest

from httpd.model.datamodel import CLASSES, STORED
from httpd.model.schema import f, xapi_class
from httpd.model.xtypes import STRING


def test_fields_come_in_declaration_order_after_uuid():
    vm = CLASSES["VM"]
    names = [fs.name for fs in vm.fields]
    assert names[0] == "uuid" and names.index("name_label") < names.index("power_state")
    assert len(names) == len(set(names))


@pytest.mark.parametrize("body", [
    {"x": f(STRING)},                                             # no annotation
    {"__annotations__": {"y": "Any"}, "y": 3},                    # annotated, not declared
    {"__annotations__": {"z": "Any"}},                            # annotated, no value
])
def test_a_field_not_declared_as_name_any_f_is_refused(body):
    cls = type("broken", (), dict(body))
    before = dict(STORED)
    with pytest.raises(TypeError, match="broken: every field"):
        xapi_class()(cls)
    assert dict(STORED) == before                                 # nothing registered


import pytest

from xva.errors import XVAFormatError
from xva.xmlsafe import parse_xml

LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<appliance version="0.1">&lol3;</appliance>"""
XXE = b"""<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<appliance>&x;</appliance>"""


@pytest.mark.parametrize("doc", [LAUGHS, XXE, LAUGHS.decode().encode("utf-16"),
                                 b"<a><b></a>", b"<!DOCTYPE a><a/>"])
def test_hostile_or_broken_xml_is_refused(doc):
    with pytest.raises(XVAFormatError) as e:
        parse_xml(doc)
    assert e.value.code == "IMPORT_ERROR"


def test_plain_xml_parses():
    assert parse_xml(b"<?xml version='1.0'?><value><struct/></value>").tag == "value"

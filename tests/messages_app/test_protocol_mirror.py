"""The browser's and the tests' copies of the protocol's vocabulary equal protocol.py's."""

from __future__ import annotations

import json
import re
from pathlib import Path

from messages_app import protocol
from tests import protocol as test_protocol

ROOM_JS = Path(protocol.__file__).parent / "static" / "messages_app" / "js" / "room.js"


def room_js_mirror() -> dict[str, object]:
    text = ROOM_JS.read_text()
    found = re.search(r"/\* protocol-mirror-begin \*/(.*?)/\* protocol-mirror-end \*/", text, re.S)
    assert found, "room.js has no protocol-mirror block"
    return json.loads(found.group(1))


def test_room_js_protocol_block_equals_protocol_py() -> None:
    assert room_js_mirror() == protocol.mirror()


def test_tests_protocol_mirror_equals_protocol_py() -> None:
    assert test_protocol.MIRROR == protocol.mirror()


def test_room_js_builds_frames_only_in_its_protocol_section() -> None:
    # Outside the Frames helper, room.js never writes a frame's JSON by hand.
    text = ROOM_JS.read_text()
    section_end = text.index("const CANCEL_ERRORS")
    assert "JSON.stringify" not in text[section_end:]
    assert 'type: "post"' not in text[section_end:]


def test_room_js_reacts_to_every_close_code_by_name() -> None:
    text = ROOM_JS.read_text()
    for name in ("tooSlow", "unauthenticated", "roomNotFound"):
        assert f"CLOSE.{name}" in text
    assert "FINAL_CLOSE_CODES.has(event.code)" in text


def test_mirror_covers_every_close_code_and_server_frame() -> None:
    mirror = protocol.mirror()
    assert set(mirror["close"].values()) == protocol.CLOSE_CODES
    assert {int(code) for code in mirror["closeReasons"]} == protocol.CLOSE_CODES
    assert set(mirror["finalCloseCodes"]) <= protocol.CLOSE_CODES

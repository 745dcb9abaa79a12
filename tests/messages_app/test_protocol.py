"""The protocol module: client frames parsed, server frames built, one vocabulary."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from messages_app import protocol
from messages_app.protocol import ClientError

ROOT = Path(__file__).resolve().parents[2]
LIMIT = protocol.max_frame_length(100)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (None, "binary_frame"),
        ("x" * (LIMIT + 1), "frame_too_large"),
        ("{not json", "invalid_json"),
        ("[1, 2]", "invalid_frame"),
        ('{"body": "hi"}', "missing_type"),
        ('{"type": "shout"}', "unknown_type"),
        ('{"type": "post"}', "missing_body"),
        ('{"type": "cancel"}', "invalid_id"),
        ('{"type": "cancel", "id": "7"}', "invalid_id"),
        ('{"type": "cancel", "id": true}', "invalid_id"),
    ],
)
def test_parse_client_frame_refuses_bad_frames_with_a_stable_code(raw: str | None, code: str):
    with pytest.raises(ClientError) as caught:
        protocol.parse_client_frame(raw, max_length=LIMIT)
    assert caught.value.code == code


def test_parse_client_frame_reads_post_and_cancel():
    post = protocol.parse_client_frame(
        '{"type": "post", "body": "hi @gpt", "client_id": "c"}', max_length=LIMIT
    )
    assert post == protocol.Post(body="hi @gpt", client_id="c")
    assert protocol.parse_client_frame('{"type": "cancel", "id": 7}', max_length=LIMIT) == (
        protocol.Cancel(id=7)
    )


def test_server_frames_are_compact_json_with_their_type():
    assert json.loads(protocol.delta_frame(message_id=3, version=4, offset=5, text="é")) == {
        "type": "delta",
        "id": 3,
        "version": 4,
        "offset": 5,
        "text": "é",
    }
    assert "é" in protocol.delta_frame(message_id=3, version=4, offset=5, text="é")
    assert json.loads(protocol.error_frame("rate_limited", "wait", retry_after=2.25)) == {
        "type": "error",
        "code": "rate_limited",
        "detail": "wait",
        "retry_after": 2.2,
    }
    assert json.loads(protocol.snapshot_frame([])) == {
        "type": "snapshot",
        "messages": [],
        "has_more": False,
    }


def test_every_error_code_raised_in_the_code_is_in_the_vocabulary():
    raised = set()
    for path in [*ROOT.glob("messages_app/**/*.py"), *ROOT.glob("worker/**/*.py")]:
        raised |= set(re.findall(r'ClientError\(\s*"([a-z_]+)"', path.read_text()))
    assert raised, "found no ClientError codes: the pattern is wrong"
    assert raised <= protocol.ERROR_CODES, raised - protocol.ERROR_CODES


def test_an_unknown_error_code_is_refused():
    with pytest.raises(AssertionError):
        ClientError("no_such_code", "detail")

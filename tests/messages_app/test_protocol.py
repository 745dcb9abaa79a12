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
        ('{"type": "retry"}', "invalid_id"),
        ('{"type": "retry", "id": 1.5}', "invalid_id"),
        ('{"type": "retry", "id": null}', "invalid_id"),
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


def test_parse_client_frame_reads_retry():
    assert protocol.parse_client_frame('{"type": "retry", "id": 7}', max_length=LIMIT) == (
        protocol.Retry(id=7)
    )
    assert "retry" in protocol.mirror()["clientFrames"]


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


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"type": "history", "before": 7, "limit": 50}', protocol.History("before", 7, 50)),
        ('{"type": "history", "after": 7}', protocol.History("after", 7, None)),
        ('{"type": "history", "around": 9, "limit": 1}', protocol.History("around", 9, 1)),
        ('{"type": "edit", "id": 3, "body": "new"}', protocol.Edit(3, "new")),
    ],
)
def test_parse_client_frame_reads_history_and_edit(text: str, expected: object) -> None:
    assert protocol.parse_client_frame(text, max_length=10_000) == expected


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ('{"type": "history"}', "invalid_history"),
        ('{"type": "history", "before": 1, "around": 2}', "invalid_history"),
        ('{"type": "history", "before": "1"}', "invalid_id"),
        ('{"type": "history", "before": 1.0}', "invalid_id"),
        ('{"type": "history", "before": false}', "invalid_id"),
        ('{"type": "history", "before": -1}', "invalid_id"),
        ('{"type": "history", "before": 1, "limit": "5"}', "invalid_limit"),
        ('{"type": "history", "before": 1, "limit": 2.5}', "invalid_limit"),
        ('{"type": "history", "before": 1, "limit": true}', "invalid_limit"),
        ('{"type": "edit", "body": "x"}', "invalid_id"),
        ('{"type": "edit", "id": 0, "body": "x"}', "invalid_id"),
        ('{"type": "edit", "id": 1}', "missing_body"),
    ],
)
def test_parse_client_frame_refuses_bad_history_and_edit_frames(text: str, code: str) -> None:
    with pytest.raises(protocol.ClientError) as refused:
        protocol.parse_client_frame(text, max_length=10_000)
    assert refused.value.code == code


def test_history_frame_carries_both_directions() -> None:
    assert json.loads(protocol.history_frame([], has_more=True, has_newer=False)) == {
        "type": "history",
        "messages": [],
        "has_more": True,
        "has_newer": False,
    }

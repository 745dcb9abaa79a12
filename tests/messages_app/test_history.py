"""The room's history by keyset pagination (selectors.room_history) and the snapshot's has_more."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection

from messages_app import services
from messages_app.models import MemberRole, Membership, Message, MessageEdit, Room, User
from messages_app.protocol import ClientError
from messages_app.selectors import room_history, room_snapshot_page

pytestmark = pytest.mark.django_db


def fill(room: Room, author: User, count: int) -> list[int]:
    """``count`` messages in ``room``, oldest first; their ids."""
    Message.objects.bulk_create(
        Message(room=room, author=author, body=f"message {n}", text_length=len(f"message {n}"))
        for n in range(count)
    )
    return list(Message.objects.filter(room=room).order_by("id").values_list("id", flat=True))


def test_room_history_pages_of_50_cover_300_messages_exactly_once_in_order(
    room: Room, alice: User, settings: Any
) -> None:
    settings.CHAT_SNAPSHOT_SIZE = 50
    ids = fill(room, alice, 300)
    snapshot, has_more = room_snapshot_page(room=room)
    assert [m["id"] for m in snapshot] == ids[-50:]
    assert has_more is True
    seen = [m["id"] for m in snapshot]
    pages = 0
    while has_more:
        page = room_history(room=room, anchor="before", message_id=seen[0], limit=50)
        ids_of_page = [m["id"] for m in page.messages]
        assert ids_of_page == sorted(ids_of_page)  # chronological
        seen = ids_of_page + seen
        has_more = page.has_more
        pages += 1
    assert pages == 5
    assert seen == ids  # every message once, none twice, none missing
    assert page.messages[0]["body"] == "message 0"


def test_room_snapshot_page_has_no_more_when_the_room_fits(room: Room, alice: User) -> None:
    fill(room, alice, 3)
    snapshot, has_more = room_snapshot_page(room=room)
    assert (len(snapshot), has_more) == (3, False)


def test_room_snapshot_page_of_exactly_the_snapshot_size_has_no_more(
    room: Room, alice: User, settings: Any
) -> None:
    settings.CHAT_SNAPSHOT_SIZE = 5
    fill(room, alice, 5)
    assert room_snapshot_page(room=room)[1] is False


def test_room_history_after_pages_forward_to_the_newest(room: Room, alice: User) -> None:
    ids = fill(room, alice, 120)
    page = room_history(room=room, anchor="after", message_id=ids[0], limit=100)
    assert [m["id"] for m in page.messages] == ids[1:101]
    assert (page.has_more, page.has_newer) == (True, True)
    page = room_history(room=room, anchor="after", message_id=ids[100], limit=100)
    assert [m["id"] for m in page.messages] == ids[101:]
    assert page.has_newer is False


def test_room_history_around_holds_the_message_in_the_middle(room: Room, alice: User) -> None:
    ids = fill(room, alice, 300)
    page = room_history(room=room, anchor="around", message_id=ids[100], limit=50)
    assert [m["id"] for m in page.messages] == ids[76:126]
    assert (page.has_more, page.has_newer) == (True, True)
    first = room_history(room=room, anchor="around", message_id=ids[0], limit=50)
    assert [m["id"] for m in first.messages] == ids[:26]
    assert (first.has_more, first.has_newer) == (False, True)
    last = room_history(room=room, anchor="around", message_id=ids[-1], limit=50)
    assert [m["id"] for m in last.messages] == ids[-25:]
    assert (last.has_more, last.has_newer) == (True, False)


def test_room_history_carries_tombstones_as_the_snapshot_does(room: Room, alice: User) -> None:
    ids = fill(room, alice, 5)
    services.message_delete(message_id=ids[1], actor=alice, room=room)
    page = room_history(room=room, anchor="before", message_id=ids[4], limit=10)
    gone = next(m for m in page.messages if m["id"] == ids[1])
    assert (gone["deleted"], gone["body"]) == (True, "")


def test_room_history_reads_another_rooms_ids_as_not_found(
    room: Room, alice: User, bob: User
) -> None:
    other = Room.objects.create(name="Other", slug="other", created_by=bob)
    Membership.objects.create(room=other, user=bob, role=MemberRole.OWNER)
    foreign = fill(other, bob, 3)
    fill(room, alice, 3)
    for anchor in ("before", "after", "around"):
        with pytest.raises(ClientError) as refused:
            room_history(room=room, anchor=anchor, message_id=foreign[1], limit=10)
        assert refused.value.code == "not_found"


@pytest.mark.parametrize("limit", [0, -1, 101, 10_000])
def test_room_history_refuses_a_limit_out_of_range(
    room: Room, alice: User, settings: Any, limit: int
) -> None:
    settings.CHAT_HISTORY_MAX_LIMIT = 100
    ids = fill(room, alice, 3)
    with pytest.raises(ClientError) as refused:
        room_history(room=room, anchor="before", message_id=ids[-1], limit=limit)
    assert refused.value.code == "invalid_limit"
    assert "between 1 and 100" in refused.value.detail


def test_room_history_takes_the_maximum_limit(room: Room, alice: User, settings: Any) -> None:
    settings.CHAT_HISTORY_MAX_LIMIT = 7
    ids = fill(room, alice, 20)
    page = room_history(room=room, anchor="before", message_id=ids[-1], limit=7)
    assert [m["id"] for m in page.messages] == ids[-8:-1]


def test_room_history_query_uses_the_room_timeline_index(room: Room, alice: User) -> None:
    # Other rooms hold most rows, interleaved with this room's, as on a real site:
    # walking the primary key and filtering by room would read them all.
    busy = Room.objects.create(name="Busy", slug="busy")
    Message.objects.bulk_create(
        Message(room=room if n % 40 == 0 else busy, author=alice, body=f"m{n}", text_length=2)
        for n in range(12_000)
    )
    ids = list(Message.objects.filter(room=room).order_by("id").values_list("id", flat=True))
    older = Message.objects.filter(room=room, id__lt=ids[-1]).order_by("-id")[:51]
    sql, params = older.query.sql_with_params()
    with connection.cursor() as cursor:
        # A table this small may be read whole, or sorted after the plain room_id
        # index, as cheaply; with both ruled out the planner must find an index
        # that gives the rows of one room in the page's order: the timeline's.
        cursor.execute(f"ANALYZE {Message._meta.db_table}")
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_sort = off")
        cursor.execute("SET LOCAL random_page_cost = 1.1")  # as on SSDs
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "message_room_timeline" in plan
    assert "Sort" not in plan  # read in index order: no sort, no OFFSET
    assert "Index Cond: ((room_id = " in plan and "(id < " in plan


def test_message_edit_keeps_the_text_before_each_edit_and_delete_removes_them(
    room: Room, alice: User
) -> None:
    posted = services.message_post(room=room, author=alice, body="first").message
    services.message_edit(room=room, message_id=posted.pk, actor=alice, body="second")
    services.message_edit(room=room, message_id=posted.pk, actor=alice, body="third")
    services.message_edit(room=room, message_id=posted.pk, actor=alice, body="third")  # same
    assert list(posted.edits.values_list("previous_body", flat=True)) == ["first", "second"]
    row = Message.objects.get(pk=posted.pk)
    assert (row.body, row.version, row.text_length) == ("third", 3, 5)
    services.message_delete(message_id=posted.pk, actor=alice, room=room)
    assert not MessageEdit.objects.filter(message_id=posted.pk).exists()


def test_admin_shows_the_texts_before_the_edits(room: Room, alice: User, client: Any) -> None:
    staff = User.objects.create_user(username="root", password="pw-long-enough-1", is_staff=True)
    staff.is_superuser = True
    staff.save()
    posted = services.message_post(room=room, author=alice, body="befor typo").message
    services.message_edit(room=room, message_id=posted.pk, actor=alice, body="after fix")
    client.force_login(staff)
    page = client.get(f"/admin/messages_app/message/{posted.pk}/change/")
    assert page.status_code == 200
    assert "befor typo" in page.content.decode()

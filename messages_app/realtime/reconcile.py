"""The reads that keep sockets converged on the database (docs/architecture.md,
"Convergence"): the versions of each room's open rows for the heartbeat, and a
room's rows for the repair after an outage of the subscription."""

from __future__ import annotations

from typing import Any

from messages_app.models import OPEN_STATUSES, Message, Room
from messages_app.selectors import room_snapshot


def open_rows(room_ids: list[int]) -> dict[int, list[tuple[int, int]]]:
    """Per room, ``(id, version)`` of its open (pending or streaming) rows, by id.

    One indexed query for every room of the process, every heartbeat.
    """
    rows: dict[int, list[tuple[int, int]]] = {room_id: [] for room_id in room_ids}
    found = (
        Message.objects.filter(room_id__in=room_ids, status__in=OPEN_STATUSES)
        .order_by("id")
        .values_list("room_id", "id", "version")
    )
    for room_id, message_id, version in found:
        rows[room_id].append((message_id, version))
    return rows


def room_rows(room_id: int) -> list[dict[str, Any]]:
    """The room's rows as a snapshot holds them (payloads), for a repair."""
    room = Room.objects.filter(pk=room_id).first()
    return room_snapshot(room=room) if room is not None else []

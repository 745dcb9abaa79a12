"""Every write of a Room or Message row, each followed by its broadcast on commit.

Consumers, views, admin actions and tasks call these; none of them saves a
message or sends to a group on its own (docs/architecture.md). Callers use the
package (``services.message_post``); the code lives by entity, one job a module:

- ``common``: what the others share: text cleaning (``clean_text``), the checks
  of a user's text, the row's broadcast on commit (``_broadcast_row``).
- ``users``: accounts (``user_create``).
- ``rooms``: rooms, their assistant settings, memberships and roles, invite
  links, read positions, deleting a room.
- ``messages``: a user's messages: posting (and the replies it calls for),
  editing, deleting.
- ``assistants``: the assistants a message calls; the default ``@gpt``.
- ``appends``: a streaming reply's text: the guarded appends, the model's text
  cleaned, chunks folded into the body.
- ``replies``: the reply's life: queued (``_enqueue_reply``), claimed,
  finished, failed, cancelled, regenerated; the heartbeat, the watchdog and the
  asker's @gpt limits.

A test that stops replies being queued patches ``services.replies._enqueue_reply``
(the module whose functions call it), not this package.
"""

from __future__ import annotations

from messages_app import events
from messages_app.protocol import ClientError
from messages_app.services.appends import (
    Appended,
    ReplyAppend,
    clean_model_text,
    replies_fold,
    reply_append,
    reply_appends_write,
)
from messages_app.services.assistants import assistant_default
from messages_app.services.common import clean_text, has_lone_surrogate
from messages_app.services.messages import PostResult, message_delete, message_edit, message_post
from messages_app.services.replies import (
    clean_usage,
    replies_fail_stale,
    replies_heartbeat,
    reply_cancel,
    reply_claim,
    reply_fail,
    reply_finish,
    reply_regenerate,
)
from messages_app.services.rooms import (
    invite_accept,
    invite_room,
    membership_add,
    membership_join,
    membership_leave,
    membership_mark_read,
    membership_remove,
    membership_set_role,
    room_assistant_settings_update,
    room_create,
    room_delete,
    room_invite_reset,
)
from messages_app.services.users import user_create

__all__ = [
    "Appended",
    "ClientError",
    "PostResult",
    "ReplyAppend",
    "assistant_default",
    "clean_model_text",
    "clean_text",
    "clean_usage",
    "events",
    "has_lone_surrogate",
    "invite_accept",
    "invite_room",
    "membership_add",
    "membership_join",
    "membership_leave",
    "membership_mark_read",
    "membership_remove",
    "membership_set_role",
    "message_delete",
    "message_edit",
    "message_post",
    "replies_fail_stale",
    "replies_fold",
    "replies_heartbeat",
    "reply_append",
    "reply_appends_write",
    "reply_cancel",
    "reply_claim",
    "reply_fail",
    "reply_finish",
    "reply_regenerate",
    "room_assistant_settings_update",
    "room_create",
    "room_delete",
    "room_invite_reset",
    "user_create",
]

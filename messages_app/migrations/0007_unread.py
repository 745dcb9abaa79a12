"""Unread counts (issue 14): each membership keeps the newest message its user has
seen. Existing members start with their rooms read, so that the upgrade does not
show every old message as news."""

from __future__ import annotations

from typing import Any

from django.db import migrations, models
from django.db.models import Max, OuterRef, Subquery
from django.db.models.functions import Coalesce


def mark_existing_read(apps: Any, schema_editor: Any) -> None:
    Membership = apps.get_model("messages_app", "Membership")
    Message = apps.get_model("messages_app", "Message")
    newest = (
        Message.objects.filter(room_id=OuterRef("room_id"))
        .order_by()
        .values("room_id")
        .annotate(newest=Max("id"))
        .values("newest")
    )
    Membership.objects.update(last_read_id=Coalesce(Subquery(newest), 0))


class Migration(migrations.Migration):
    dependencies = [("messages_app", "0006_assistants")]

    operations = [
        migrations.AddField(
            model_name="membership",
            name="last_read_id",
            field=models.BigIntegerField(default=0),
        ),
        migrations.AddConstraint(
            model_name="membership",
            constraint=models.CheckConstraint(
                condition=models.Q(("last_read_id__gte", 0)),
                name="membership_last_read_id_not_negative",
            ),
        ),
        migrations.RunPython(mark_existing_read, migrations.RunPython.noop),
    ]

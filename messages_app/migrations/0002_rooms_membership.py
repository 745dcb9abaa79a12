"""Rooms that belong to people: memberships, visibility, invites, message tombstones.

Existing rooms become public; each room's creator (if any) becomes its owner and
everyone who posted there a member. Messages are not changed.
"""

from typing import Any

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def _memberships_from_history(apps: Any, schema_editor: Any) -> None:
    Room = apps.get_model("messages_app", "Room")
    Message = apps.get_model("messages_app", "Message")
    Membership = apps.get_model("messages_app", "Membership")
    rows = []
    for room in Room.objects.all().iterator():
        if room.created_by_id is not None:
            rows.append(Membership(room_id=room.pk, user_id=room.created_by_id, role="owner"))
        posters = (
            Message.objects.filter(room_id=room.pk, author__isnull=False)
            .exclude(author_id=room.created_by_id)
            .order_by()  # no Meta ordering in the DISTINCT
            .values_list("author_id", flat=True)
            .distinct()
        )
        rows.extend(
            Membership(room_id=room.pk, user_id=user_id, role="member") for user_id in posters
        )
    Membership.objects.bulk_create(rows, batch_size=1000)


class Migration(migrations.Migration):
    dependencies = [
        ("messages_app", "0002_message_heartbeat"),
    ]

    operations = [
        migrations.CreateModel(
            name="Membership",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "role",
                    models.CharField(
                        choices=[
                            ("owner", "owner"),
                            ("moderator", "moderator"),
                            ("member", "member"),
                        ],
                        default="member",
                        max_length=16,
                    ),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
            ],
            options={
                "ordering": ["room", "id"],
            },
        ),
        migrations.AddField(
            model_name="message",
            name="deleted_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="message",
            name="deleted_by",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AddField(
            model_name="room",
            name="invite_expires_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="room",
            name="invite_token",
            field=models.CharField(blank=True, max_length=64, null=True, unique=True),
        ),
        migrations.AddField(
            model_name="room",
            name="visibility",
            field=models.CharField(
                choices=[
                    ("public", "public: listed for everyone signed in; opening it joins"),
                    ("private", "private: members only, joined through an invite link"),
                ],
                default="public",
                max_length=16,
            ),
        ),
        migrations.AddConstraint(
            model_name="room",
            constraint=models.CheckConstraint(
                condition=models.Q(("visibility__in", ["public", "private"])),
                name="room_visibility_valid",
            ),
        ),
        migrations.AddField(
            model_name="membership",
            name="room",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE,
                related_name="memberships",
                to="messages_app.room",
            ),
        ),
        migrations.AddField(
            model_name="membership",
            name="user",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE,
                related_name="memberships",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AddConstraint(
            model_name="membership",
            constraint=models.UniqueConstraint(
                fields=("room", "user"), name="membership_unique_room_user"
            ),
        ),
        migrations.AddConstraint(
            model_name="membership",
            constraint=models.CheckConstraint(
                condition=models.Q(("role__in", ["owner", "moderator", "member"])),
                name="membership_role_valid",
            ),
        ),
        migrations.RunPython(_memberships_from_history, migrations.RunPython.noop),
    ]

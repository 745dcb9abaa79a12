"""Reply text streams into ReplyChunk rows (issue 12): a write costs the same
whatever the reply's length. Existing rows get their text length; none has chunks."""

from __future__ import annotations

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("messages_app", "0002_rooms_membership")]

    operations = [
        migrations.AddField(
            model_name="message",
            name="text_length",
            field=models.PositiveIntegerField(default=0, editable=False),
        ),
        migrations.AddField(
            model_name="message",
            name="unfolded_length",
            field=models.PositiveIntegerField(default=0, editable=False),
        ),
        migrations.RunSQL(
            "UPDATE messages_app_message SET text_length = char_length(body)",
            reverse_sql=migrations.RunSQL.noop,
        ),
        migrations.CreateModel(
            name="ReplyChunk",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("version", models.PositiveIntegerField()),
                ("offset", models.PositiveIntegerField()),
                ("text", models.TextField()),
                (
                    "message",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="chunks",
                        to="messages_app.message",
                    ),
                ),
            ],
            options={"ordering": ["message", "version"]},
        ),
        migrations.AddConstraint(
            model_name="replychunk",
            constraint=models.UniqueConstraint(
                fields=("message", "version"), name="chunk_unique_version"
            ),
        ),
    ]

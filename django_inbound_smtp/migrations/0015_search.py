"""Full-text search of subject, body and sender, on PostgreSQL only.

A stored generated ``tsvector`` column with a GIN index: the subject weighted A, the
body B, and with weight D the envelope sender, the From header, the queue id, the
Message-ID and the To and Cc addresses and names (also with ``@ . - _ +`` read as
spaces, so ``alice``, ``example.org`` and ``alice@example.org`` all find
``alice@example.org``).
It is not a model field: the model is the same on every database, and Django never
selects or writes the column (PostgreSQL fills it on INSERT, and on UPDATE only when
the subject or a body changes). On other databases this migration does nothing; the
admin searches those with case-insensitive containment instead.

Text-search configuration ``simple``: mail arrives in every language, and a
language's configuration (``english``) would stem and drop stop words of that one
language and mangle the others. ``simple`` lower-cases and splits words, for every
language alike: searches match whole words, not stems. Accents are kept (``unaccent``
is an extension, and not immutable, so it cannot feed a generated column).

Bounded input: a ``tsvector`` holds at most 1 MiB of words, so a message with a huge
body would fail its UPDATE. Only the first 100,000 characters of the text body (at
most 400 KB of UTF-8) are indexed; the HTML body, tags, styles and scripts removed, is
indexed only when there is no text body.

Adding the column computes it for every stored message, in this migration: about a
minute per 100,000 messages.

A later migration that changes the type of a column the expression reads (subject,
text, html, envelope_from, from_header, queue_id, message_id, addresses; a CharField's
max_length is a type) fails on PostgreSQL ("cannot alter type of a column used by a
generated column"): it must drop ``search_vector`` first and add it again after.
"""

from django.db import migrations

TABLE = "inbound_smtp_inboundmessage"
COLUMN = "search_vector"
INDEX = "inbound_smtp_msg_search_idx"

# Who and which: sender, From, ids, To and Cc (JSON arrays of [name, address]).
PEOPLE = """left(
    envelope_from || ' ' || from_header || ' ' || queue_id || ' ' || message_id || ' '
    || coalesce((addresses -> 'to')::text, '') || ' '
    || coalesce((addresses -> 'cc')::text, ''),
    8000)"""

# Keep in step with django_inbound_smtp/admin/search.py (CONFIG, COLUMN).
VECTOR = f"""
setweight(to_tsvector('simple'::regconfig, left(subject, 2000)), 'A')
|| setweight(to_tsvector('simple'::regconfig, left(text, 100000)), 'B')
|| setweight(to_tsvector('simple'::regconfig, CASE WHEN text = '' THEN left(
    regexp_replace(
        regexp_replace(left(html, 400000), '<(style|script)[^<]*</(style|script)>', ' ', 'gi'),
        '<[^>]*>', ' ', 'g'),
    100000) ELSE '' END), 'B')
|| setweight(to_tsvector('simple'::regconfig,
    {PEOPLE} || ' ' || translate({PEOPLE}, '@.-_+<>"[],', '           ')), 'D')
"""


def add_vector(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(
        f"ALTER TABLE {TABLE} ADD COLUMN {COLUMN} tsvector "
        f"GENERATED ALWAYS AS ({VECTOR}) STORED"
    )
    schema_editor.execute(f"CREATE INDEX {INDEX} ON {TABLE} USING gin ({COLUMN})")


def drop_vector(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX}")
    schema_editor.execute(f"ALTER TABLE {TABLE} DROP COLUMN IF EXISTS {COLUMN}")


class Migration(migrations.Migration):
    dependencies = [
        ("inbound_smtp", "0014_ops"),
    ]

    operations = [migrations.RunPython(add_vector, drop_vector)]

"""The distinct envelope recipient addresses that contain a text (the ``to:`` search).

A containment test (``%text%``) cannot use the address index, so the plain way reads
every recipient row: 200,000 rows at 100,000 messages, about 100 ms on PostgreSQL
(README, *Performance*). Most deployments receive at a few thousand addresses at most,
each many times over: on PostgreSQL the distinct addresses are first walked through the
index, one descent per address (a "skip scan", written as a recursive query), and only
they are tested. Where there are more distinct addresses than ``WALK_LIMIT`` (unique
reply or return-path addresses, say), the walk stops there and the rows are read as
before.
"""

from __future__ import annotations

from django.db import connections

from django_inbound_smtp.models import InboundRecipient

__all__ = ["WALK_LIMIT", "addresses_containing"]

#: Most distinct addresses the index walk visits before giving up for a plain scan
#: (each costs one index descent: a few milliseconds for all of them).
WALK_LIMIT = 2000

# The smallest address after the previous one, until none is left (NULL) or the limit.
_WALK = """
WITH RECURSIVE walk(address, step) AS (
    (SELECT {column}, 1 FROM {table} ORDER BY {column} LIMIT 1)
    UNION ALL
    SELECT (SELECT {column} FROM {table} WHERE {column} > walk.address
            ORDER BY {column} LIMIT 1), walk.step + 1
    FROM walk WHERE walk.address IS NOT NULL AND walk.step < %s
)
SELECT address FROM walk
WHERE address IS NULL OR UPPER(address::text) LIKE UPPER(%s) OR step = %s
ORDER BY step
"""


def _walked(value: str, *, using: str, limit: int) -> list[str] | None:
    """The addresses containing ``value`` (any case) by the index walk, or ``None`` when
    there are more than ``limit`` distinct addresses."""
    connection = connections[using]
    opts = InboundRecipient._meta
    column = opts.get_field("address").column
    assert column is not None  # a concrete field always has one
    sql = _WALK.format(
        table=connection.ops.quote_name(opts.db_table), column=connection.ops.quote_name(column)
    )
    pattern = f"%{connection.ops.prep_for_like_query(value)}%"
    with connection.cursor() as cursor:
        cursor.execute(sql, [limit, pattern, limit])
        rows = [address for (address,) in cursor.fetchall()]
    # The last row is the end of the walk (NULL) or the address at the limit.
    if not rows or rows[-1] is None:
        return [address for address in rows if address is not None]
    return None


def addresses_containing(value: str, *, using: str, most: int) -> list[str]:
    """The distinct recipient addresses containing ``value``, ignoring case; at most
    ``most + 1`` of them (more than ``most`` means: too many to list)."""
    if connections[using].vendor == "postgresql":
        walked = _walked(value, using=using, limit=WALK_LIMIT)
        if walked is not None:
            return walked[: most + 1]
    matching = (
        InboundRecipient.objects.using(using)
        .filter(address__icontains=value)
        .order_by()
        .values_list("address", flat=True)
        .distinct()
    )
    return list(matching[: most + 1])

"""The message list's search: operators, full-text on PostgreSQL, containment elsewhere.

The search box takes the language of :mod:`.search_query`; every term must hold (AND).
A plain word or quoted phrase matches the message's own fields: subject, body (the
text body, or the HTML body's text when there is none), envelope sender, From, To and
Cc, queue id and Message-ID. Envelope recipients (Bcc included) are searched with
``to:``, attachment names with ``filename:``.

On PostgreSQL the words are matched by full-text search: the generated
``search_vector`` column of migration 0013 (configuration ``simple``, GIN index), whole
words, any language. Matches are listed best first (``ts_rank``: a word in the subject
weighs more than one in the body, several occurrences more than one) unless staff sort
by a column. On other databases words are matched by case-insensitive containment,
newest first.

Speed at 100,000 messages: related rows (recipients, attachments) are matched with
``EXISTS`` subqueries, never joins, so the list needs no ``DISTINCT``. A search with
words is evaluated once, to the ids of its newest ``MAX_MATCHES`` matches; the list,
its count and the date drill-down (earliest and latest date, the years) then read those
ids by primary key instead of testing every row of the date index against the search,
and ranks are computed for those ids only.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime, time
from typing import TYPE_CHECKING, Any, ClassVar

from django.contrib import messages
from django.contrib.admin.views.main import ORDER_VAR
from django.db import connections
from django.db.models import (
    BooleanField,
    Exists,
    Expression,
    F,
    Func,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    TextField,
)
from django.db.models.expressions import RawSQL
from django.db.models.functions import Cast
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from django_inbound_smtp.admin._addresses import addresses_containing
from django_inbound_smtp.admin.search_query import SearchSyntaxError, Term, parse_search
from django_inbound_smtp.models import Attachment, InboundMessage, InboundRecipient

if TYPE_CHECKING:
    from django.utils.functional import _StrOrPromise

__all__ = ["MAX_MATCHES", "RANK", "MessageSearchMixin", "search_messages"]

# Keep in step with migrations/0015_search.py.
CONFIG = "simple"
COLUMN = "search_vector"

#: Most messages a search with words lists: the newest this many matches. A search
#: matching more says so, and needs another word or an operator.
MAX_MATCHES = 1000

#: The annotation holding a row's place in rank order (1 = best), on PostgreSQL.
RANK = "search_rank"

# Terms no index answers (containment), or answered once to ids (full text).
_SCANNED = frozenset({"text", "from", "to", "subject", "filename"})

# Most distinct recipient addresses a to: term is turned into (see _delivered_to).
_MAX_ADDRESSES = 100

# Columns of a message too big to carry through the sort of a ranked list.
_BULKY = ("text", "html", "headers", "defects", "error")

# Fields of the message row a plain word is contained in, besides subject and body
# (on PostgreSQL they are in the full-text column).
_OWN_FIELDS = ("envelope_from", "from_header", "queue_id", "message_id")


def _contained(value: str, *fields: str) -> Q:
    found = Q()
    for name in fields:
        found |= Q(**{f"{name}__icontains": value})
    return found


def _recipient(value: str) -> Exists:
    return Exists(InboundRecipient.objects.filter(message=OuterRef("pk"), address__icontains=value))


def _delivered_to(value: str, *, using: str) -> Exists:
    """Delivered to an envelope recipient containing ``value``.

    The addresses that contain it are read first (``_addresses``: on PostgreSQL a walk
    of the distinct addresses through their index): then the database matches them
    exactly, by index and with its statistics of common addresses, where a
    containment test inside the query gets a blind estimate and a poor plan for a
    mailbox that receives a quarter of all mail."""
    addresses = addresses_containing(value, using=using, most=_MAX_ADDRESSES)
    if len(addresses) > _MAX_ADDRESSES:
        return _recipient(value)
    return Exists(InboundRecipient.objects.filter(message=OuterRef("pk"), address__in=addresses))


def _attachment(value: str | None = None) -> Exists:
    related = Attachment.objects.filter(message=OuterRef("pk"))
    if value is not None:
        related = related.filter(filename__icontains=value)
    return Exists(related)


def _start_of(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def _operator(term: Term, *, using: str) -> Q | Exists:
    """The condition of one operator term (not plain text)."""
    value = term.value
    if term.kind == "before":
        assert isinstance(value, date)
        return Q(received_at__lt=_start_of(value))
    if term.kind == "after":
        assert isinstance(value, date)
        return Q(received_at__gte=_start_of(value))
    assert isinstance(value, str)
    if term.kind == "from":
        return _contained(value, "envelope_from", "from_header")
    if term.kind == "to":
        return _delivered_to(value, using=using)
    if term.kind == "subject":
        return Q(subject__icontains=value)
    if term.kind == "filename":
        return _attachment(value)
    if term.kind == "attachment":
        return _attachment()
    return Q(status=value)


_UNSEGMENTED = re.compile(
    "[\u0e00-\u0e7f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]"
)


def _tsquery(words: list[str]) -> str:
    return " && ".join([f"phraseto_tsquery('{CONFIG}', %s)"] * len(words))


class _Matches(Expression):
    """``<this row>.search_vector @@ <every phrase of words>``: true when the message's
    own fields hold each phrase (its words in that order)."""

    output_field = BooleanField()
    conditional = True

    def __init__(self, words: list[str]) -> None:
        super().__init__()
        self.words = words

    def as_sql(self, compiler: Any, connection: Any) -> tuple[str, tuple[str, ...]]:
        # The column is not a model field: name it through this query's own alias
        # of the table.
        table = compiler.quote_name_unless_alias(compiler.query.base_table)
        return f"{table}.{COLUMN} @@ ({_tsquery(self.words)})", tuple(self.words)


def _word_contained(word: str) -> Q:
    # What the full-text column holds on PostgreSQL, by containment.
    return _contained(word, "subject", "text", "addresses", *_OWN_FIELDS) | Q(
        text="", html__icontains=word
    )


def _ranks(ids: list[int], words: list[str], *, using: str) -> list[int]:
    """``ids`` best first by ``ts_rank`` of their full-text column against ``words``."""
    table = InboundMessage._meta.db_table
    sql = (
        f"SELECT id FROM {table} WHERE id = ANY(%s) "
        f"ORDER BY ts_rank({COLUMN}, {_tsquery(words)}) DESC, received_at DESC, id DESC"
    )
    with connections[using].cursor() as cursor:
        cursor.execute(sql, [ids, *words])
        return [int(pk) for (pk,) in cursor.fetchall()]


def _id_list(ids: list[int], *, full_text: bool) -> Any:
    if full_text:
        return RawSQL("SELECT unnest(%s::bigint[])", (ids,))
    return ids


def search_messages(
    queryset: QuerySet[InboundMessage], terms: list[Term]
) -> tuple[QuerySet[InboundMessage], bool]:
    """``queryset`` narrowed to the messages matching every term, and whether more than
    ``MAX_MATCHES`` matched (then the newest of them are kept). Searches for status,
    dates or attachments only are answered by their indexes and never cut. On
    PostgreSQL the rows of a search with words carry ``search_rank``."""
    base = queryset
    words = [str(term.value) for term in terms if term.kind == "text"]
    full_text = connections[queryset.db].vendor == "postgresql"
    for term in terms:
        if term.kind != "text":
            queryset = queryset.filter(_operator(term, using=queryset.db))
    if not any(term.kind in _SCANNED for term in terms):
        return queryset, False  # indexed columns only: nothing to gain from ids
    # Scripts written without spaces (Chinese, Japanese, Korean, Thai) are one token per
    # run of text to the 'simple' configuration: a word inside one is found by containment.
    ranked_words = [w for w in words if not _UNSEGMENTED.search(w)] if full_text else []
    if ranked_words:
        # One condition: PostgreSQL chooses between the GIN index (rare words) and the
        # date index, newest first, until enough rows match (common words).
        queryset = queryset.filter(_Matches(ranked_words))
    for word in words:
        if word not in ranked_words:
            queryset = queryset.filter(_word_contained(word))
    newest = queryset.order_by("-received_at", "-pk").values_list("pk", flat=True)
    ids = list(newest[: MAX_MATCHES + 1])
    cut = len(ids) > MAX_MATCHES
    ids = ids[:MAX_MATCHES]
    # The list's own filters and related loading, without the search's subqueries.
    # The ids as one array parameter, unnested in a subquery: PostgreSQL reads them by
    # primary key (a literal IN list would have it walk the date index for the date
    # drill-down's MIN/MAX, testing every row against the list).
    found = base.filter(pk__in=_id_list(ids, full_text=full_text))
    words = ranked_words
    if full_text and words and ids:
        # Ranked rows are sorted whole (up to MAX_MATCHES of them): leave the bodies
        # and the header list, which no list column shows, out of the sort.
        found = found.defer(*_BULKY)
    if full_text and words and ids:
        ranked = _ranks(ids, words, using=queryset.db)
        # Each row's place looked up in a JSON object {"id": place} (a binary search),
        # not array_position (a linear one per row: quadratic over the ids).
        places = json.dumps({str(pk): place for place, pk in enumerate(ranked, start=1)})
        position = Func(
            RawSQL("%s::jsonb", (places,)),
            Cast(F("pk"), TextField()),
            arg_joiner=" ->> ",
            template="(%(expressions)s)::integer",
            output_field=IntegerField(),
        )
        found = found.annotate(**{RANK: position})
    return found, cut


class MessageSearchMixin:
    """The search of ``InboundMessageAdmin`` (``get_search_results``), best first on
    PostgreSQL. A search the box cannot read shows an error and lists nothing."""

    search_help_text: ClassVar[_StrOrPromise | None] = _(
        'Words or "phrases" (subject, body, From, To, ids) and operators: '
        "from: to: subject: filename: has:attachment is:failed status: before:YYYY-MM-DD "
        "after:YYYY-MM-DD."
    )

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[InboundMessage], search_term: str
    ) -> tuple[QuerySet[InboundMessage], bool]:
        if not search_term.strip():
            return queryset, False
        statuses = {str(value) for value in InboundMessage.Status.values}
        try:
            terms = parse_search(search_term, statuses=statuses)
        except SearchSyntaxError as error:
            self.message_user(  # type: ignore[attr-defined]
                request, f"Search not understood: {error}", messages.ERROR
            )
            return queryset.none(), False
        found, cut = search_messages(queryset, terms)
        if cut:
            self.message_user(  # type: ignore[attr-defined]
                request,
                f"More than {MAX_MATCHES} messages match: the newest {MAX_MATCHES} are "
                "listed. Add a word or an operator (e.g. after:2026-01-01) to narrow it.",
                messages.WARNING,
            )
        if RANK in found.query.annotations and not request.GET.get(ORDER_VAR):
            # Best first, unless staff chose a column to sort by; the list's own
            # ordering breaks ties.
            found = found.order_by(RANK, *queryset.query.order_by)
        # Only IN and EXISTS subqueries, no joins: no duplicate rows, so no DISTINCT.
        return found, False

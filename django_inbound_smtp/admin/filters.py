"""List filters of the message admin that stay cheap at 100,000 messages."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.db.models import Exists, OuterRef, QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from django_inbound_smtp.models import InboundMessage, InboundRecipient, Mailbox

if TYPE_CHECKING:
    from django.utils.functional import _StrOrPromise as StrOrPromise

__all__ = ["RESULTS", "MailboxFilter", "result_filter"]


class FilterLookups:
    """Lets ``MailboxFilter`` keep its parameter, which Django would take for a lookup
    across relations that no list filter declares."""

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest) -> bool:
        if lookup == MailboxFilter.parameter_name:
            return True
        return bool(super().lookup_allowed(lookup, value, request))  # type: ignore[misc]


class MailboxFilter(admin.SimpleListFilter):
    """Messages delivered to a mailbox.

    Django's related-field filter would list only the mailboxes that have messages (a
    scan of every recipient row on each page view) and filter through a join (several
    recipients of one message in one mailbox: duplicate rows, so DISTINCT). This one
    lists the mailboxes (a small table) and filters with EXISTS.
    """

    title = _("mailbox")
    # The parameter Django's own filter used: links from the mailbox list keep working.
    parameter_name = "recipients__mailbox__id__exact"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[Any, str]]:
        return [(pk, address) for pk, address in Mailbox.objects.values_list("pk", "address")]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[InboundMessage]
    ) -> QuerySet[InboundMessage]:
        value = self.value()
        if value is None:
            return queryset
        try:
            mailbox = int(value)
        except ValueError:
            return queryset.none()
        delivered = InboundRecipient.objects.filter(message=OuterRef("pk"), mailbox_id=mailbox)
        return queryset.filter(Exists(delivered))


# RFC 8601's result words; the sender-domain check adds nullmx (a domain taking no mail).
RESULTS = ("pass", "fail", "softfail", "neutral", "none", "policy", "temperror", "permerror")


class _ResultFilter(admin.SimpleListFilter):
    """One sender-check result column, offered as its fixed words.

    Django's all-values filter reads ``SELECT DISTINCT`` of the column on every page
    view: a scan of one sender-check row per message, for each such filter (the result
    columns have no index, by design). The words are known; this lists them.
    """

    field = ""
    words: tuple[str, ...] = RESULTS

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[Any, str]]:
        return [(word, word) for word in self.words]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[InboundMessage]
    ) -> QuerySet[InboundMessage]:
        value = self.value()
        if value is None:
            return queryset
        # A one-to-one: the join adds no duplicate rows.
        return queryset.filter(**{f"sender_check__{self.field}": value})


def result_filter(field: str, title: StrOrPromise) -> type[admin.SimpleListFilter]:
    """The list filter of ``SenderCheck.<field>``; URL parameter ``sender_check__<field>``
    (the one Django's own filter used)."""
    words = (*RESULTS, "nullmx") if field == "sender_domain_result" else RESULTS
    attributes = {
        "title": title,
        "parameter_name": f"sender_check__{field}",
        "field": field,
        "words": words,
    }
    return type(f"{field.title().replace('_', '')}Filter", (_ResultFilter,), attributes)

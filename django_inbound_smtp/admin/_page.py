"""The parts of a message's page: its tabs, and the escaped views of its bytes.

Everything from the message reaches the page through ``escape``/``format_html`` or the
template engine's autoescaping; control and bidi characters are shown as escapes, so a
sender cannot reorder what staff read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.utils import timezone
from django.utils.dateformat import format as date_format
from django.utils.functional import Promise
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext_lazy as _

from django_inbound_smtp import parsing
from django_inbound_smtp.models import InboundMessage

__all__ = [
    "PREVIEW_MAX_BYTES",
    "SOURCE_MAX_BYTES",
    "TABS",
    "Tab",
    "decoded_headers",
    "group_tabs",
    "numbered_source",
    "raw_head",
    "raw_headers",
    "seconds",
    "text_body",
    "visible",
]

# The page parses a message not parsed yet on demand. Bigger ones are shown without
# their body: parsing hostile MIME in a web request has no time limit.
PREVIEW_MAX_BYTES = 2 * 1024 * 1024
# The Source tab shows this much of the raw message; the download has it all.
SOURCE_MAX_BYTES = 256 * 1024

TABS: tuple[tuple[str, Promise], ...] = (
    ("html", _("HTML")),
    ("text", _("Text")),
    # Only on a bounce (its recipient rows); the tab it opens on.
    ("bounce", _("Bounce report")),
    ("headers", _("Headers")),
    ("source", _("Source")),
    ("attachments", _("Attachments")),
    ("checks", _("Sender checks")),
    ("envelope", _("Envelope")),
    ("processing", _("Processing history")),
)
# Inlines by model name: which tab shows them. Others follow the tabs.
INLINE_TABS = {
    "inboundrecipient": "envelope",
    "attachment": "attachments",
    "sendercheck": "checks",
    "processingattempt": "processing",
    "bouncerecipient": "bounce",
}
# Tabs left out when they show nothing.
OPTIONAL_TABS = frozenset(("bounce",))
# A fieldset goes in a tab through this class (``"classes": ("inbound-tab-envelope",)``);
# a fieldset without one is the summary above the tabs.
TAB_CLASS = "inbound-tab-"

# C0/C1 controls (but tab and newline) and the bidi controls (Trojan Source).
_INVISIBLE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)


@dataclass
class Tab:
    """One tab of the page: a template of its own, fieldsets and inlines."""

    id: str
    label: str
    active: bool = False
    count: int = 0  # rows of its inlines
    fieldsets: list[Any] = field(default_factory=list)
    inlines: list[Any] = field(default_factory=list)

    @property
    def template(self) -> str:
        return f"admin/inbound_smtp/inboundmessage/tabs/{self.id}.html"


def group_tabs(
    fieldsets: Iterable[Any], inlines: Iterable[Any], *, active: str
) -> tuple[list[Any], list[Tab], list[Any]]:
    """Split the admin's fieldsets and inline formsets into the summary, the tabs and
    the inlines no tab claims."""
    tabs = {tab_id: Tab(tab_id, str(label), active=tab_id == active) for tab_id, label in TABS}
    summary: list[Any] = []
    for fieldset in fieldsets:
        marker = next((c for c in fieldset.classes.split() if c.startswith(TAB_CLASS)), None)
        tab = tabs.get(marker.removeprefix(TAB_CLASS)) if marker else None
        (tab.fieldsets if tab else summary).append(fieldset)
    others: list[Any] = []
    for inline in inlines:
        tab_id = INLINE_TABS.get(inline.opts.opts.model_name)
        (tabs[tab_id].inlines if tab_id else others).append(inline)
    for tab in tabs.values():
        tab.count = sum(len(inline.formset.forms) for inline in tab.inlines)
    attachments = tabs["attachments"]
    attachments.label = f"{attachments.label} ({attachments.count})"
    shown = [t for t in tabs.values() if t.id not in OPTIONAL_TABS or t.count or t.fieldsets]
    return summary, shown, others


def visible(text: str) -> str:
    """``text`` with control and bidi characters shown as ``\\xNN``/``\\uNNNN``."""
    return _INVISIBLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def seconds(value: datetime | None, *, zone: bool = True) -> str:
    """A timestamp to the second in the current time zone (``-`` for none)."""
    if value is None:
        return "-"
    return date_format(timezone.localtime(value), "Y-m-d H:i:s T" if zone else "Y-m-d H:i:s")


def numbered_source(raw: bytes) -> SafeString:
    """The raw bytes, escaped, one ``<span class="line">`` with its number per line."""
    text = visible(raw.decode("utf-8", errors="backslashreplace"))
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    rendered = "".join(
        f'<span class="line" id="L{number}"><span class="ln" aria-hidden="true">{number}</span>'
        f"{escape(line.removesuffix(chr(13)))}\n</span>"
        for number, line in enumerate(lines, start=1)
    )
    return mark_safe(rendered)  # noqa: S308 - every line went through escape()


def raw_head(message: InboundMessage) -> bytes | None:
    """The first ``SOURCE_MAX_BYTES`` of the raw message, or ``None`` if its file cannot
    be read (deleted from storage, say): the page must still render."""
    try:
        with message.open_raw() as handle:
            return handle.read(SOURCE_MAX_BYTES)
    except OSError:
        return None


def raw_headers(head: bytes) -> str:
    """The header block as received (bytes decoded for display), unescaped text."""
    block = parsing.header_block(head)
    return visible(block.decode("utf-8", errors="backslashreplace"))


def decoded_headers(message: InboundMessage) -> list[tuple[str, str]]:
    """``(name, decoded value)`` of every header, in order; empty until parsed."""
    return [(visible(name), visible(decoded)) for name, _raw, decoded in message.headers]


def _parsed(message: InboundMessage) -> Any:
    try:
        with message.open_raw() as handle:
            raw = handle.read(PREVIEW_MAX_BYTES + 1)
    except OSError:
        return None
    if len(raw) > PREVIEW_MAX_BYTES:
        return None
    try:
        return parsing.parse(raw)
    except (Exception, RecursionError):
        # Hostile structure (hostile-inputs #71): the page must still render.
        return None


def text_body(message: InboundMessage) -> str | None:
    """The text body (parsed on demand if need be), or ``None`` if it cannot be shown."""
    if message.parsed_at is not None:
        return visible(message.text)
    parsed = _parsed(message)
    return None if parsed is None else visible(parsing.text_body(parsed))

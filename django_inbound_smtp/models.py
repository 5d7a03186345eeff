"""Recipient definitions, stored messages and the link between them.

Models stay declarative and query-only: the write path is ``delivery.py``, the
recipient policy is ``validators/``. No settings are read at class definition.
"""

from __future__ import annotations

import unicodedata
from typing import IO, TYPE_CHECKING, ClassVar

from django.core.exceptions import ValidationError
from django.core.files.storage import Storage, storages
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from django_inbound_smtp.conf import get_settings
from django_inbound_smtp.envelope import address_syntax_error, split_address
from django_inbound_smtp.managers import InboundMessageQuerySet, MailboxQuerySet

__all__ = [
    "InboundMessage",
    "InboundRecipient",
    "Mailbox",
    "SenderCheck",
    "normalize_mailbox_address",
]

CATCH_ALL_LOCAL_PART = "*"


def normalize_mailbox_address(address: str) -> str:
    """The canonical form a ``Mailbox`` is stored under: trimmed and lower-cased.

    Mailboxes are matched case-insensitively, local part included, as Postfix does
    for virtual mailboxes; ``*@domain`` is the catch-all for a domain.
    """
    return unicodedata.normalize("NFC", address.strip().lower())


class Mailbox(models.Model):
    """An address we accept mail for: one mailbox, or ``*@domain`` for a whole domain."""

    address = models.CharField(
        _("address"),
        max_length=254,
        unique=True,
        help_text=_(
            "user@example.org, or *@example.org to accept every address of the domain. "
            "Matched case-insensitively."
        ),
    )
    domain = models.CharField(
        _("domain"),
        max_length=255,
        editable=False,
        db_index=True,
        help_text=_("Lower-cased domain of the address; filled in on save."),
    )
    is_active = models.BooleanField(
        _("active"),
        default=True,
        help_text=_("Inactive mailboxes reject mail at RCPT time (550 5.1.1)."),
    )
    description = models.CharField(
        _("description"), max_length=200, blank=True, help_text=_("For your own reference.")
    )
    handler = models.CharField(
        _("handler"),
        max_length=255,
        blank=True,
        help_text=_(
            "Optional. Dotted path to a callable, or the name of a Celery task, run for every "
            "message delivered to this mailbox, after the message_received signal."
        ),
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    objects: ClassVar[MailboxQuerySet] = MailboxQuerySet.as_manager()  # type: ignore[assignment]

    class Meta:
        verbose_name = _("mailbox")
        verbose_name_plural = _("mailboxes")
        ordering = ("domain", "address")

    def __str__(self) -> str:
        return self.address

    def save(self, *args: object, **kwargs: object) -> None:
        self.address = normalize_mailbox_address(self.address)
        self.domain = split_address(self.address)[1]
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    def clean(self) -> None:
        self.address = normalize_mailbox_address(self.address)
        problem = address_syntax_error(self.address)
        if problem:
            raise ValidationError({"address": _("Not a usable address: %s.") % problem})

    @property
    def is_catch_all(self) -> bool:
        """True for ``*@domain``."""
        return self.address.startswith(CATCH_ALL_LOCAL_PART + "@")


class InboundMessage(models.Model):
    """One accepted DATA transaction: the envelope, the raw bytes and a header summary."""

    class Status(models.TextChoices):
        RECEIVED = "received", _("received")
        PROCESSING = "processing", _("processing")
        PROCESSED = "processed", _("processed")
        FAILED = "failed", _("failed")
        DUPLICATE = "duplicate", _("duplicate")

    queue_id = models.CharField(
        _("queue id"),
        max_length=32,
        unique=True,
        help_text=_("Our id, sent to the client in the 250 reply and in our Received: line."),
    )
    status = models.CharField(
        _("status"),
        max_length=16,
        choices=Status.choices,
        default=Status.RECEIVED,
        db_index=True,
        help_text=_(
            "received: stored, waiting for processing; processing: claimed by a worker; "
            "processed / failed: receivers and handlers ran; duplicate: a repeat delivery "
            "of another message, never processed."
        ),
    )
    envelope_from = models.CharField(
        _("envelope sender"),
        max_length=254,
        blank=True,
        help_text=_("MAIL FROM; empty for the null sender <> (bounces)."),
    )
    peer_ip = models.GenericIPAddressField(
        _("client IP"), null=True, blank=True, help_text=_("Address of the SMTP client.")
    )
    peer_port = models.PositiveIntegerField(_("client port"), null=True, blank=True)
    helo = models.CharField(
        _("HELO name"),
        max_length=255,
        blank=True,
        help_text=_("Name the client gave in HELO/EHLO (sanitized; not verified)."),
    )
    tls = models.BooleanField(_("TLS"), default=False, help_text=_("Received over TLS."))
    tls_version = models.CharField(
        _("TLS version"), max_length=16, blank=True, help_text=_("e.g. TLSv1.3")
    )
    tls_cipher = models.CharField(_("TLS cipher"), max_length=100, blank=True)
    bare_newlines = models.BooleanField(
        _("bare newlines"),
        default=False,
        help_text=_("DATA held CR or LF bytes outside a CRLF (see INBOUND_SMTP['BARE_NEWLINES'])."),
    )
    auth_user = models.CharField(
        _("authenticated user"),
        max_length=150,
        blank=True,
        help_text=_("Username the client authenticated as (submission listener only)."),
    )
    size = models.PositiveBigIntegerField(
        _("size"), help_text=_("Size in bytes of the stored raw message.")
    )
    received_at = models.DateTimeField(_("received"), default=timezone.now, db_index=True)
    raw_file = models.CharField(
        _("raw file"),
        max_length=255,
        help_text=_("Name of the raw .eml in the INBOUND_SMTP['STORAGE'] storage."),
    )
    message_id = models.CharField(_("Message-ID"), max_length=512, blank=True, db_index=True)
    subject = models.TextField(_("subject"), blank=True)
    from_header = models.TextField(
        _("From header"), blank=True, help_text=_("As written by the sender; never verified.")
    )
    date_header = models.DateTimeField(_("Date header"), null=True, blank=True)
    processed_at = models.DateTimeField(_("processed"), null=True, blank=True)
    attempts = models.PositiveIntegerField(
        _("processing attempts"), default=0, help_text=_("Times processing has started.")
    )
    error = models.TextField(
        _("last error"), blank=True, help_text=_("Traceback of the last failed processing.")
    )
    dispatched_at = models.DateTimeField(
        _("dispatched"),
        null=True,
        blank=True,
        help_text=_("Last time processing was scheduled; the sweeper re-schedules stale ones."),
    )
    claimed_by = models.CharField(
        _("claimed by"),
        max_length=200,
        blank=True,
        help_text=_("Worker running the processing now (a Celery task id or an inline thread)."),
    )
    claimed_at = models.DateTimeField(_("claimed"), null=True, blank=True)
    dedupe_key = models.CharField(
        _("dedupe key"),
        max_length=64,
        blank=True,
        db_index=True,
        help_text=_("SHA-256 of the received bytes, Message-ID, envelope sender and recipients."),
    )
    duplicate_of = models.ForeignKey(
        "self",
        # A duplicate is a record of its original (it shares the file): it goes with it.
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="duplicates",
        verbose_name=_("duplicate of"),
        help_text=_("The first delivery of the same message, for a repeat delivery."),
    )

    objects: ClassVar[InboundMessageQuerySet] = InboundMessageQuerySet.as_manager()  # type: ignore[assignment]

    class Meta:
        verbose_name = _("inbound message")
        verbose_name_plural = _("inbound messages")
        ordering = ("-received_at", "-pk")
        constraints = [
            # One original per dedupe key: of two identical deliveries racing, one
            # commits and the other is stored as its duplicate.
            models.UniqueConstraint(
                fields=["dedupe_key"],
                condition=models.Q(duplicate_of__isnull=True) & ~models.Q(dedupe_key=""),
                name="inbound_smtp_one_original_per_key",
            )
        ]
        indexes = [
            models.Index(fields=["status", "dispatched_at"], name="inbound_smtp_msg_sweep_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.queue_id} {self.subject[:60]}".strip()

    @property
    def storage(self) -> Storage:
        """The storage the raw bytes live in (``INBOUND_SMTP['STORAGE']``)."""
        return storages[get_settings().STORAGE]

    def open_raw(self) -> IO[bytes]:
        """Open the raw message for binary reading; the caller closes it."""
        return self.storage.open(self.raw_file, "rb")

    @property
    def raw_bytes(self) -> bytes:
        """The message exactly as stored: our ``Received:`` line, then the client's bytes."""
        with self.open_raw() as handle:
            return handle.read()


class InboundRecipient(models.Model):
    """One accepted envelope recipient of a message (BCC recipients included)."""

    message = models.ForeignKey(
        InboundMessage,
        on_delete=models.CASCADE,
        related_name="recipients",
        verbose_name=_("message"),
    )
    mailbox = models.ForeignKey(
        Mailbox,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="deliveries",
        verbose_name=_("mailbox"),
        help_text=_("Mailbox that accepted the address; empty if a custom validator did."),
    )
    address = models.CharField(
        _("address"),
        max_length=254,
        db_index=True,
        help_text=_("RCPT TO exactly as the client gave it."),
    )
    tag = models.CharField(
        _("tag"), max_length=64, blank=True, help_text=_("Plus-address tag (user+tag@...).")
    )

    class Meta:
        verbose_name = _("recipient")
        verbose_name_plural = _("recipients")
        ordering = ("pk",)

    def __str__(self) -> str:
        return self.address


if TYPE_CHECKING:
    from django.utils.functional import _StrOrPromise as StrOrPromise


def _result(label: StrOrPromise) -> models.CharField[str, str]:
    return models.CharField(label, max_length=16, blank=True, db_index=True)


def _reason(label: StrOrPromise) -> models.CharField[str, str]:
    return models.CharField(label, max_length=255, blank=True)


class SenderCheck(models.Model):
    """What the sender checks found for one message (``INBOUND_SMTP["SENDER_CHECKS"]``).

    Each ``*_result`` is an RFC 8601 result word (``pass``, ``fail``, ``softfail``,
    ``neutral``, ``none``, ``temperror``, ``permerror``; ``nullmx`` for a sender domain
    that receives no mail), or empty when that check was off. ``sender_verified`` is
    the one verdict to trust: the From domain is authenticated by an aligned SPF or
    DKIM pass (DMARC's test, with the domain's own strictness when it publishes one).
    """

    message = models.OneToOneField(
        InboundMessage,
        on_delete=models.CASCADE,
        related_name="sender_check",
        verbose_name=_("message"),
    )
    sender_verified = models.BooleanField(
        _("sender verified"),
        default=False,
        db_index=True,
        help_text=_("The From domain is authenticated (aligned SPF or DKIM pass)."),
    )
    from_domain = models.CharField(
        _("From domain"), max_length=255, blank=True, help_text=_("Domain of the From header.")
    )
    dnsbl_result = _result(_("DNSBL"))
    dnsbl_reason = _reason(_("DNSBL reason"))
    iprev_result = _result(_("reverse DNS"))
    iprev_reason = _reason(_("reverse DNS reason"))
    sender_domain_result = _result(_("sender domain"))
    sender_domain_reason = _reason(_("sender domain reason"))
    spf_result = _result(_("SPF"))
    spf_reason = _reason(_("SPF reason"))
    spf_helo_result = _result(_("SPF (HELO)"))
    spf_helo_reason = _reason(_("SPF (HELO) reason"))
    dkim_result = _result(_("DKIM"))
    dkim_reason = _reason(_("DKIM reason"))
    dmarc_result = _result(_("DMARC"))
    dmarc_reason = _reason(_("DMARC reason"))
    dmarc_policy = models.CharField(
        _("DMARC policy"), max_length=16, blank=True, help_text=_("The domain's p= (or sp=).")
    )
    arc_result = _result(_("ARC"))
    arc_reason = _reason(_("ARC reason"))
    details = models.JSONField(
        _("details"), default=dict, blank=True, help_text=_("Per-signature DKIM results etc.")
    )
    authentication_results = models.TextField(
        _("Authentication-Results"), blank=True, help_text=_("The header we added (RFC 8601).")
    )

    class Meta:
        verbose_name = _("sender check")
        verbose_name_plural = _("sender checks")

    def __str__(self) -> str:
        return f"{self.message_id}: {'verified' if self.sender_verified else 'not verified'}"

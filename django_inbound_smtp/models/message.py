"""Stored messages and their envelope recipients."""

from __future__ import annotations

from email.message import EmailMessage
from typing import IO, TYPE_CHECKING, ClassVar

from django.conf import settings
from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.core.files.storage import Storage, storages
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from django_inbound_smtp.conf import get_settings
from django_inbound_smtp.managers import InboundMessageQuerySet
from django_inbound_smtp.models.mailbox import Mailbox
from django_inbound_smtp.parsing import parse

if TYPE_CHECKING:
    from django_inbound_smtp.models.attachment import Attachment

__all__ = ["InboundMessage", "InboundRecipient", "ReplyTrust"]


class InboundMessage(models.Model):
    """One accepted DATA transaction: the envelope, the raw bytes and a header summary."""

    class Status(models.TextChoices):
        RECEIVED = "received", _("received")
        PROCESSING = "processing", _("processing")
        PROCESSED = "processed", _("processed")
        FAILED = "failed", _("failed")
        DUPLICATE = "duplicate", _("duplicate")

    class Kind(models.TextChoices):
        """What sort of mail it is (README, *Kinds of mail*); the values are
        ``django_inbound_smtp.kinds``'s constants."""

        REGULAR = "regular", _("regular")
        BOUNCE = "bounce", _("bounce")
        AUTO_REPLY = "auto_reply", _("auto-reply")
        LIST = "list", _("list")
        LOOP = "loop", _("loop")

    class ReceivedVia(models.TextChoices):
        SMTP = "smtp", _("SMTP")
        LMTP = "lmtp", _("LMTP (from the MTA in front)")
        ADMIN = "admin", _("admin (injected)")
        PIPE = "pipe", _("pipe (inbound_import -)")
        IMPORT = "import", _("mbox / Maildir import")

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
    mail_options = models.JSONField(
        _("MAIL parameters"),
        default=list,
        blank=True,
        help_text=_("ESMTP parameters the client gave with MAIL FROM (e.g. BODY=8BITMIME)."),
    )
    esmtp = models.BooleanField(
        _("ESMTP"), default=True, help_text=_("The client greeted with EHLO (not HELO).")
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
    # Filled in by the parse step after the 250, before message_received is sent.
    parsed_at = models.DateTimeField(
        _("parsed"),
        null=True,
        blank=True,
        help_text=_("When headers, bodies and attachments were extracted; empty until then."),
    )
    parse_error = models.TextField(
        _("parse error"),
        blank=True,
        help_text=_("Why the message was not parsed completely (a limit, a broken structure)."),
    )
    defects = models.JSONField(
        _("defects"),
        default=list,
        blank=True,
        help_text=_("Problems found while parsing (bad charsets, malformed parts)."),
    )
    headers = models.JSONField(
        _("headers"),
        default=list,
        blank=True,
        help_text=_("Every header in order, duplicates kept: [name, raw value, decoded value]."),
    )
    addresses = models.JSONField(
        _("addresses"),
        default=dict,
        blank=True,
        help_text=_('From, To, Cc and Reply-To as {"to": [[name, address], ...], ...}.'),
    )
    # Set by the parse step with the parsed fields (README, "Kinds of mail").
    kind = models.CharField(
        _("kind"),
        max_length=16,
        choices=Kind.choices,
        default=Kind.REGULAR,
        help_text=_(
            "regular, bounce, auto_reply, list or loop: decided when the message is parsed."
        ),
    )
    kind_reason = models.CharField(
        _("why this kind"),
        max_length=200,
        blank=True,
        help_text=_("The rule that decided the kind, e.g. 'Auto-Submitted: auto-replied'."),
    )
    in_reply_to = models.TextField(_("In-Reply-To"), blank=True)
    references = models.JSONField(_("References"), default=list, blank=True)
    text = models.TextField(_("text body"), blank=True)
    html = models.TextField(
        _("HTML body"), blank=True, help_text=_("As sent: hostile, never render it unsanitized.")
    )
    # The new text of a reply (parsing.quoted): what the sender wrote, without the
    # quoted history and the signature. Set by the parse step with the bodies.
    reply_text = models.TextField(
        _("reply text"),
        blank=True,
        help_text=_(
            "The new text the sender wrote: the text body (or, without one, the HTML "
            "body's text) without the quoted history and the signature."
        ),
    )
    reply_html = models.TextField(
        _("reply HTML"),
        blank=True,
        help_text=_(
            "The HTML body without its quote and signature blocks. As sent: hostile, "
            "never render it unsanitized."
        ),
    )
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
        help_text=_(
            "Who holds the message: the smtpd process whose queue it waits in, or the "
            "worker processing it (a Celery task id or an inline thread)."
        ),
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
    # Retention (INBOUND_SMTP["RETENTION"]) never deletes a held message, nor the
    # original of a held duplicate (deleting an original deletes its duplicates).
    held = models.BooleanField(
        _("held"),
        default=False,
        help_text=_("Kept whatever the retention settings say, until the hold is released."),
    )
    held_by = models.CharField(
        _("held by"), max_length=150, blank=True, help_text=_("Who put the hold on.")
    )
    held_at = models.DateTimeField(_("held since"), null=True, blank=True)

    # How the message came in: over SMTP, or put in from the admin by a staff user.
    received_via = models.CharField(
        _("received via"),
        max_length=16,
        choices=ReceivedVia.choices,
        default=ReceivedVia.SMTP,
        help_text=_(
            "smtp: a client sent it; lmtp: the MTA in front handed it over LMTP; "
            "admin: a staff user put it in from the admin; pipe: an MTA piped it to "
            "inbound_import; import: from an mbox file or Maildir folder."
        ),
    )
    injected_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        # The record outlives the account: received_via still says it was injected.
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("injected by"),
        help_text=_("The staff user who put the message in from the admin."),
    )

    objects: ClassVar[InboundMessageQuerySet] = InboundMessageQuerySet.as_manager()  # type: ignore[assignment]

    class Meta:
        verbose_name = _("inbound message")
        verbose_name_plural = _("inbound messages")
        ordering = ("-received_at", "-pk")
        permissions = [
            ("inject_message", _("Can put a message in from the admin")),
            ("forward_message", _("Can forward a stored message by email")),
        ]
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
            # Retention finds finished messages by status and age.
            models.Index(fields=["status", "processed_at"], name="inbound_smtp_msg_retention_idx"),
            models.Index(fields=["kind", "received_at"], name="inbound_smtp_msg_kind_idx"),
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

    def as_email(self) -> EmailMessage:
        """The stored message as a stdlib ``EmailMessage`` (``email.policy.default``)."""
        return parse(self.raw_bytes)

    def header_values(self, name: str) -> list[str]:
        """Decoded values of every ``name`` header, in order (case-insensitive)."""
        wanted = name.lower()
        return [decoded for key, _raw, decoded in self.headers if key.lower() == wanted]

    def address_list(self, field: str) -> list[tuple[str, str]]:
        """``(display name, address)`` pairs of ``"from"``, ``"to"``, ``"cc"`` or ``"reply_to"``."""
        return [(name, address) for name, address in self.addresses.get(field, [])]

    def hold(self, *, by: str = "") -> None:
        """Keep this message whatever the retention settings say (``by``: who, for the
        record). Saved at once; see ``InboundMessage.objects.hold()`` for many."""
        type(self).objects.filter(pk=self.pk).hold(by=by)
        self.refresh_from_db(fields=["held", "held_by", "held_at"])

    def release_hold(self) -> None:
        """Let retention delete this message again once it is old enough. Saved at once."""
        type(self).objects.filter(pk=self.pk).release_hold()
        self.refresh_from_db(fields=["held", "held_by", "held_at"])

    def cid_map(self) -> dict[str, Attachment]:
        """Attachments by Content-ID (without ``<>``), for inline images in ``html``."""
        return {a.content_id: a for a in self.attachments.all() if a.content_id}


class ReplyTrust(models.TextChoices):
    """Whether a reply to a signed address issued to a user may act as that user."""

    #: The From (or envelope sender) is the user's address and the From domain is
    #: authenticated (DMARC pass, or SPF/DKIM aligned with it).
    TRUSTED = "trusted", _("trusted")
    #: Neither the From nor the envelope sender is the user's address.
    SENDER_MISMATCH = "sender_mismatch", _("sender is not the user")
    #: The sender is the user's address, but not authenticated.
    NOT_AUTHENTICATED = "not_authenticated", _("sender not authenticated")
    #: The token was issued to a user who no longer exists (or has no address).
    UNKNOWN_USER = "unknown_user", _("user unknown")
    #: The token was not issued to a user: anyone holding the address may reply.
    NO_USER = "no_user", _("not issued to a user")


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
    route = models.CharField(
        _("route"),
        max_length=200,
        blank=True,
        help_text=_(
            "The route whose handler got this recipient (empty: none matched, or not "
            "processed yet). See the README, Routing."
        ),
    )
    # A signed reply address (reply_addresses): what its token named, kept so processing
    # can resolve the object again; the user it was issued to, and the verdict on
    # whether this reply may act as that user (set by processing).
    reply_content_type = models.ForeignKey(
        ContentType,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("reply to (type)"),
        help_text=_("Model of the object a signed reply address refers to."),
    )
    reply_object_id = models.CharField(
        _("reply to (id)"),
        max_length=64,
        blank=True,
        help_text=_("Primary key of the object a signed reply address refers to."),
    )
    reply_object = GenericForeignKey("reply_content_type", "reply_object_id")
    reply_user_pk = models.CharField(
        _("issued to user"),
        max_length=64,
        blank=True,
        help_text=_("Primary key of the user the signed reply address was issued to."),
    )
    reply_trust = models.CharField(
        _("reply trust"),
        max_length=24,
        choices=ReplyTrust.choices,
        blank=True,
        help_text=_("Whether this reply may act as the user the address was issued to."),
    )
    bounce_recipient = models.CharField(
        _("bounced recipient"),
        max_length=254,
        blank=True,
        help_text=_("For a signed return path (VERP): the address the original mail went to."),
    )

    class Meta:
        verbose_name = _("recipient")
        verbose_name_plural = _("recipients")
        ordering = ("pk",)

    def __str__(self) -> str:
        return self.address

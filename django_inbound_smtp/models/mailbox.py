"""Recipient definitions: the addresses we accept mail for."""

from __future__ import annotations

from typing import ClassVar

from django.core.exceptions import ValidationError
from django.db import models
from django.utils.translation import gettext_lazy as _

from django_inbound_smtp import routing
from django_inbound_smtp._celery import celery_app
from django_inbound_smtp.envelope import address_key, address_syntax_error, split_address
from django_inbound_smtp.managers import MailboxQuerySet

__all__ = ["CATCH_ALL_LOCAL_PART", "Mailbox", "normalize_mailbox_address"]

CATCH_ALL_LOCAL_PART = "*"


def normalize_mailbox_address(address: str) -> str:
    """The canonical form a ``Mailbox`` is stored under: trimmed and lower-cased.

    Mailboxes are matched case-insensitively, local part included, as Postfix does
    for virtual mailboxes; ``*@domain`` is the catch-all for a domain.
    """
    return address_key(address)


def _task_names() -> list[str]:
    try:
        return list(celery_app().tasks)
    except Exception:  # no usable Celery app: no task names to accept
        return []


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
    # Quotas: what a mailbox may hold. Empty = unlimited. Counted over the messages
    # stored for it (duplicates not counted); deleting messages frees room.
    quota_messages = models.PositiveIntegerField(
        _("quota (messages)"),
        null=True,
        blank=True,
        help_text=_(
            "Most messages this mailbox may hold; empty = unlimited. When full, new mail "
            "gets 452 4.2.2 (mailbox full, try again later)."
        ),
    )
    quota_bytes = models.PositiveBigIntegerField(
        _("quota (bytes)"),
        null=True,
        blank=True,
        help_text=_(
            "Most bytes of stored messages this mailbox may hold; empty = unlimited. When "
            "full, new mail gets 452 4.2.2 (mailbox full, try again later)."
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
        if self.handler and not routing.handler_known(self.handler, celery_tasks=_task_names):
            raise ValidationError(
                {
                    "handler": _(
                        "Neither an importable callable nor a task of the project's Celery "
                        "app: every message to this mailbox would fail."
                    )
                }
            )

    @property
    def has_quota(self) -> bool:
        """True when either quota is set."""
        return self.quota_messages is not None or self.quota_bytes is not None

    @property
    def is_catch_all(self) -> bool:
        """True for ``*@domain``."""
        return self.address.startswith(CATCH_ALL_LOCAL_PART + "@")

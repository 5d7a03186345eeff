"""Tickets whose comments arrive by mail. Notifications about a ticket carry a signed
reply address (``reply+<token>@example.test``, django_inbound_smtp's
``reply_addresses``) that names the ticket and the user it was sent to; a reply to it
becomes a ``Comment`` (see ``inbox/comments.py``)."""

from django.conf import settings
from django.db import models

from django_inbound_smtp import reply_addresses
from django_inbound_smtp.models import InboundMessage, ReplyTrust


class Ticket(models.Model):
    subject = models.CharField(max_length=200)
    created = models.DateTimeField(auto_now_add=True)
    # Who opened it: notifications go to them, signed for them (reply_address_for).
    requester = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="tickets",
    )

    class Meta:
        ordering = ("-created", "-pk")

    def __str__(self) -> str:
        return f"#{self.pk} {self.subject}"

    def reply_address_for(self, user: models.Model | None = None, **options: object) -> str:
        """A signed address whose replies become comments on this ticket. Issued to
        ``user``, a reply counts as theirs only when it comes from them, authenticated
        (the comment's ``trust``). Anyone else's reply is refused by the handler."""
        return reply_addresses.reply_address(self, for_user=user, **options)  # type: ignore[arg-type]

    @property
    def reply_address(self) -> str:
        """The address of the ticket itself (not issued to a user): the admin shows it."""
        return self.reply_address_for(None)


class Comment(models.Model):
    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="comments")
    # The envelope sender (MAIL FROM) of the message.
    author_email = models.CharField(max_length=254, blank=True)
    body = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)
    # The stored mail this comment came from; kept when that mail is deleted.
    source_message = models.ForeignKey(
        InboundMessage,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="ticket_comments",
    )
    # For a comment by mail: whether its sender is the user the reply address was
    # issued to, authenticated (ReplyTrust); empty for comments written in the admin.
    trust = models.CharField(max_length=24, choices=ReplyTrust.choices, blank=True)

    class Meta:
        ordering = ("created", "pk")
        constraints = [
            # Processing is at least once: a message processed again must not comment
            # twice on the same ticket. (NULLs are distinct: comments without a source
            # message are not limited.)
            models.UniqueConstraint(
                fields=["ticket", "source_message"], name="inbox_comment_once_per_message"
            )
        ]

    def __str__(self) -> str:
        return f"Comment by {self.author_email or '<>'} on ticket #{self.ticket_id}"

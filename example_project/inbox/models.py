"""Tickets whose comments arrive by mail: a reply to ``ticket+<id>@example.test`` becomes
a ``Comment`` on ticket ``<id>`` (see ``inbox/comments.py``)."""

from django.db import models

from django_inbound_smtp.models import InboundMessage

TICKET_MAILBOX = "ticket@example.test"


class Ticket(models.Model):
    subject = models.CharField(max_length=200)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("-created", "-pk")

    def __str__(self) -> str:
        return f"#{self.pk} {self.subject}"

    @property
    def reply_address(self) -> str:
        """Mail sent here becomes a comment on this ticket (plus-addressing: the mailbox
        ``ticket@example.test`` accepts it, with the ticket id as the tag)."""
        local, _, domain = TICKET_MAILBOX.partition("@")
        return f"{local}+{self.pk}@{domain}"


class Comment(models.Model):
    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="comments")
    # The envelope sender (MAIL FROM) of the message; not verified, like any mail.
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

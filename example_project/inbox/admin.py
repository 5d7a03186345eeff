"""Tickets and their comments in the admin; comments that came by mail link to it."""

from typing import Any

from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from inbox.models import Comment, Ticket
from inbox.notifications import notify_requester


class CommentInline(admin.TabularInline):
    model = Comment
    fields = ("created", "author_email", "body", "trust", "source_message")
    # Set by the mail route only: the message, and whether its sender was the user.
    readonly_fields = ("created", "trust", "source_message")
    extra = 0


@admin.register(Ticket)
class TicketAdmin(admin.ModelAdmin):
    list_display = ("id", "subject", "requester", "reply_address", "comment_count", "created")
    list_display_links = ("id", "subject")
    search_fields = ("subject",)
    readonly_fields = ("reply_address", "created")
    inlines = (CommentInline,)

    def save_formset(
        self,
        request: HttpRequest,
        form: Any,
        formset: Any,
        change: bool,  # noqa: FBT001 - Django's signature
    ) -> None:
        """A comment written here is mailed to the requester, with a signed reply address
        issued to them: their reply comes back as the next comment."""
        super().save_formset(request, form, formset, change)
        for comment in getattr(formset, "new_objects", []):
            if isinstance(comment, Comment) and comment.source_message_id is None:
                notify_requester(comment.ticket, comment.body)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return super().get_queryset(request).annotate(comment_count=Count("comments"))

    @admin.display(description="comments", ordering="comment_count")
    def comment_count(self, ticket: Ticket) -> int:
        return int(getattr(ticket, "comment_count", 0))

    @admin.display(description="reply by mail to")
    def reply_address(self, ticket: Ticket) -> str:
        return ticket.reply_address if ticket.pk else "-"

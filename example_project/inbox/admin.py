"""Tickets and their comments in the admin; comments that came by mail link to it."""

from typing import Any

from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from inbox.models import Comment, Ticket


class CommentInline(admin.TabularInline):
    model = Comment
    fields = ("created", "author_email", "body", "source_message")
    # source_message is set by the mail receiver only; shown as a link to the message.
    readonly_fields = ("created", "source_message")
    extra = 0


@admin.register(Ticket)
class TicketAdmin(admin.ModelAdmin):
    list_display = ("id", "subject", "reply_address", "comment_count", "created")
    list_display_links = ("id", "subject")
    search_fields = ("subject",)
    readonly_fields = ("reply_address", "created")
    inlines = (CommentInline,)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return super().get_queryset(request).annotate(comment_count=Count("comments"))

    @admin.display(description="comments", ordering="comment_count")
    def comment_count(self, ticket: Ticket) -> int:
        return int(getattr(ticket, "comment_count", 0))

    @admin.display(description="reply by mail to")
    def reply_address(self, ticket: Ticket) -> str:
        return ticket.reply_address if ticket.pk else "-"

"""Admin: editable mailboxes; read-only messages with a safe detail view and raw download.

Received content is hostile: nothing from a message is ever rendered as HTML in the
admin's own pages. One module per admin: ``mailbox`` and ``message``; ``inlines`` holds
the read-only parts of a message page, ``_downloads`` the one way bytes leave. The mail
room's own views: ``inject`` (put a message in, through ``_submit``), ``forward`` (send a
stored message by email) and ``export`` (selected messages as mbox).
"""

from django_inbound_smtp.admin.inlines import AttachmentInline, SenderCheckInline
from django_inbound_smtp.admin.mailbox import MailboxAdmin
from django_inbound_smtp.admin.message import InboundMessageAdmin

__all__ = ["AttachmentInline", "InboundMessageAdmin", "MailboxAdmin", "SenderCheckInline"]

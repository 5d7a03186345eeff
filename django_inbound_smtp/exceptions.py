"""The error hierarchy. Inherit the type whose behaviour you want."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured

from django_inbound_smtp import replies
from django_inbound_smtp.replies import Reply

__all__ = [
    "ConfigurationError",
    "InboundSmtpError",
    "ParseError",
    "Rejected",
    "TemporaryFailure",
]


class InboundSmtpError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigurationError(InboundSmtpError, ImproperlyConfigured):
    """A required ``INBOUND_SMTP`` value is missing or unusable; the message names the key."""


class Rejected(InboundSmtpError):
    """A policy hook refuses permanently. The client sees ``reply`` (a 5xx)."""

    def __init__(self, reply: Reply = replies.MAILBOX_UNKNOWN) -> None:
        if not reply.is_permanent:
            raise ValueError(f"Rejected needs a 5xx reply, got {reply.code}")
        super().__init__(str(reply))
        self.reply = reply


class TemporaryFailure(InboundSmtpError):
    """A policy hook cannot decide now. The client sees ``reply`` (a 4xx) and retries."""

    def __init__(self, reply: Reply = replies.LOOKUP_FAILURE) -> None:
        if not reply.is_temporary:
            raise ValueError(f"TemporaryFailure needs a 4xx reply, got {reply.code}")
        super().__init__(str(reply))
        self.reply = reply


class ParseError(InboundSmtpError, ValueError):
    """Message content could not be parsed within the configured limits."""

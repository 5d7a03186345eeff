"""The error hierarchy. Inherit the type whose behaviour you want."""

from __future__ import annotations

from typing import ClassVar

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


class _Refusal(InboundSmtpError):
    """A policy decision carrying the reply the client sees."""

    default_reply: ClassVar[Reply]
    reply_class: ClassVar[str]

    def __init__(self, reply: Reply | None = None) -> None:
        reply = self.default_reply if reply is None else reply
        if str(reply.code)[0] != self.reply_class[0]:
            raise ValueError(
                f"{type(self).__name__} needs a {self.reply_class} reply, got {reply.code}"
            )
        super().__init__(str(reply))
        self.reply = reply


class Rejected(_Refusal):
    """A policy hook refuses permanently. The client sees ``reply`` (a 5xx)."""

    default_reply = replies.MAILBOX_UNKNOWN
    reply_class = "5xx"


class TemporaryFailure(_Refusal):
    """A policy hook cannot decide now. The client sees ``reply`` (a 4xx) and retries."""

    default_reply = replies.LOOKUP_FAILURE
    reply_class = "4xx"


class ParseError(InboundSmtpError, ValueError):
    """Message content could not be parsed within the configured limits."""

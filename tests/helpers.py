"""Helpers shared by the wire tests."""

from __future__ import annotations

import smtplib


class GuardedSMTP(smtplib.SMTP):
    """An ``smtplib`` client that fails the test on a leaked exception reply.

    aiosmtpd's default error path answers ``500 Error: (ExcType) text``: a permanent
    failure carrying internals. Our hooks must never let one out (STYLE §4).
    """

    def getreply(self) -> tuple[int, bytes]:
        code, message = super().getreply()
        assert not message.startswith(b"Error: ("), f"leaked exception: {code} {message!r}"
        return code, message

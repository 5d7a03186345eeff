"""A plain LMTP client for the tests: ``smtplib`` sends the commands, and DATA is read
the LMTP way (RFC 2033 §4.2), one reply per accepted recipient."""

from __future__ import annotations

import smtplib

from tests.helpers import GuardedSMTP


class LmtpClient(GuardedSMTP):
    """``smtplib`` over TCP speaking LMTP: ``lhlo()`` and ``data_each()``."""

    def lhlo(self, name: str = "mta.test") -> tuple[int, bytes]:
        code, text = self.docmd("LHLO", name)
        if code == 250:
            self.ehlo_resp = text
            self.does_esmtp = True
            self.esmtp_features = {
                line.split()[0].lower(): "" for line in text.decode().splitlines()[1:]
            }
        return code, text

    def data_each(self, body: bytes, *, recipients: int) -> list[tuple[int, str]]:
        """Send DATA with ``body``; the reply for each of the ``recipients`` accepted."""
        code, text = self.docmd("DATA")
        if code != 354:
            raise smtplib.SMTPDataError(code, text)
        quoted = smtplib.quotedata(body.decode("latin-1")).encode("latin-1")
        if not quoted.endswith(b"\r\n"):
            quoted += b"\r\n"
        self.send(quoted + b".\r\n")
        replies = []
        for _ in range(recipients):
            code, text = self.getreply()
            replies.append((code, text.decode()))
        return replies

import smtplib

import pytest

from django_inbound_smtp.models import InboundMessage

pytestmark = pytest.mark.integration


def test_accepts_and_stores(make_mailbox, smtp_client: smtplib.SMTP) -> None:
    make_mailbox("user@our.test")
    body = b"Subject: hi\r\nMessage-ID: <1@x>\r\n\r\nhello\r\n"
    smtp_client.sendmail("a@example.org", ["user@our.test"], body)
    msg = InboundMessage.objects.get()
    assert msg.raw_bytes.endswith(body)
    assert msg.subject == "hi"

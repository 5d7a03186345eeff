"""Messages the browser tests send: a small, realistic mailbox (built here, not fixtures on
disk, so each one says in code what it exercises)."""

from __future__ import annotations

import re
import struct
import zlib
from email.message import EmailMessage

#: Our mailboxes (the ``mailboxes`` fixture of ``browser_kit`` makes them).
RECIPIENTS = ("staff@our.test", "sales@our.test", "support@our.test")
LOGO_CID = "logo@example.test"
LONG_ATTACHMENT_NAME = (
    "Quarterly report for the board of directors, final version as approved (signed).pdf"
)


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A valid PNG of one colour (no imaging library needed)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def newsletter() -> bytes:
    """multipart/mixed: text + (HTML with an inline ``cid:`` PNG and one remote image),
    and a PDF attachment with a long name."""
    message = EmailMessage()
    message["From"] = "Example Weekly <news@example.test>"
    message["To"] = RECIPIENTS[0]
    message["Subject"] = "Example Weekly: the December issue"
    message["Message-ID"] = "<newsletter-2026-12@example.test>"
    message["Date"] = "Sun, 06 Dec 2026 09:30:00 +0000"
    message.set_content("The December issue.\n\nOur logo is above; read the article online.\n")
    message.add_alternative(
        f"""<!doctype html><html><body style="font-family: sans-serif">
<img id="logo" src="cid:{LOGO_CID}" alt="Example Weekly logo" width="120" height="40">
<h1 id="newsletter-heading">The December issue</h1>
<p>Three things happened this month. The first is the new office.</p>
<p><img id="remote-banner" src="https://images.example.test/banner.png" alt="banner"></p>
<p><a id="article-link" href="https://news.example.test/december">Read the article</a></p>
</body></html>""",
        subtype="html",
    )
    html_part = message.get_body(("html",))
    assert isinstance(html_part, EmailMessage)
    html_part.add_related(
        png(120, 40, (32, 96, 160)), maintype="image", subtype="png", cid=f"<{LOGO_CID}>"
    )
    message.add_attachment(
        b"%PDF-1.4\n% a few bytes standing in for a report\n%%EOF\n",
        maintype="application",
        subtype="pdf",
        filename=LONG_ATTACHMENT_NAME,
    )
    message.add_attachment(
        png(64, 48, (200, 120, 40)), maintype="image", subtype="png", filename="chart.png"
    )
    return message.as_bytes()


#: Raw 8-bit ISO-8859-1 in the Subject (no RFC 2047 encoded word); the charset is
#: declared only in Content-Type, as some old mailers send it.
LATIN1_SUBJECT = "Grüße aus Köln"
LATIN1 = (
    b"From: Jens <jens@example.test>\r\n"
    b"To: staff@our.test\r\n"
    b"Subject: Gr\xfc\xdfe aus K\xf6ln\r\n"
    b"Message-ID: <latin1@example.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=iso-8859-1\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"Viele Gr\xfc\xdfe aus K\xf6ln!\r\n"
)


def plain(subject: str, *, sender: str, to: str, body: str) -> bytes:
    message = EmailMessage()
    slug = re.sub(r"[^a-z0-9]+", "-", subject.lower()).strip("-")
    message["Message-ID"] = f"<{slug}@example.test>"
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    return message.as_bytes()


def long_fields() -> bytes:
    """A message whose every listed field is long: what pushes a list off the screen."""
    return plain(
        "Re: Fwd: Re: Your order 2026-12-0042 has shipped, and here is everything you wanted "
        "to know about its delivery",
        sender=(
            "The Very Long Named Customer Service Department <customer-service-department"
            "@subsidiary.example.test>"
        ),
        to=", ".join(RECIPIENTS),
        body="A message with long header fields.\n",
    )


def mailroom() -> list[bytes]:
    """What the list page shows in the screenshots and the layout test."""
    return [
        plain(
            "Lunch on Friday?",
            sender="Ada <ada@example.test>",
            to=RECIPIENTS[0],
            body="Shall we try the new place?\n",
        ),
        LATIN1,
        long_fields(),
        plain(
            "Password reset requested",
            sender="no-reply@accounts.example.test",
            to=RECIPIENTS[1],
            body="Someone asked to reset your password.\n",
        ),
        newsletter(),
    ]

"""Raw 8-bit header bytes decode as bodies do: UTF-8, the message's charset, windows-1252.

Tier 1 (the parser alone, summary and full parse agreeing) and tier 4 (real SMTP into
the real database, then the admin list, search and detail page).
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from django_inbound_smtp.models import InboundMessage, Mailbox
from django_inbound_smtp.parsing import summarize_headers
from django_inbound_smtp.parsing._charsets import decode_text, decode_undeclared
from django_inbound_smtp.parsing.mime import parse_message
from django_inbound_smtp.testing import running_server
from tests.helpers import GuardedSMTP

BAD = "\ufffd"


def _single(subject: bytes, charset: str | None, *, sender: bytes = b"a@example.org") -> bytes:
    content_type = b"text/plain" + (b"; charset=" + charset.encode() if charset else b"")
    return (
        b"From: " + sender + b"\r\nTo: user@our.test\r\nSubject: " + subject + b"\r\n"
        b"Content-Type: " + content_type + b"\r\n\r\nbody\r\n"
    )


def _multipart(subject: bytes, charset: str) -> bytes:
    # The charset is declared only by the first text part, not by the message.
    return (
        b"From: a@example.org\r\nSubject: " + subject + b"\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=zz\r\n\r\n"
        b"--zz\r\nContent-Type: text/plain; charset=" + charset.encode() + b"\r\n\r\nx\r\n"
        b"--zz\r\nContent-Type: text/html\r\n\r\n<p>x</p>\r\n--zz--\r\n"
    )


def _defect(name: str, used: str) -> str:
    return f"part 1: UndeclaredHeaderCharset: 8-bit {name} decoded as {used}"


KOELN = "Grüße aus Köln"
CP1252 = "\u201cQuoted\u201d price 5 \u20ac"
KOI8 = "Привет из Москвы"
SJIS = "日本語の件名"
# 0x81 and 0x8D are two of the five bytes windows-1252 leaves undefined; C3 28 is not
# UTF-8 (a lead byte without its continuation); no charset is declared anywhere.
INVALID = b"broken \x81\x8d\xc3\x28 end"
INVALID_TEXT = f"broken {BAD}{BAD}\u00c3( end"

CASES = {
    "latin-1": (_single(KOELN.encode("latin-1"), "iso-8859-1"), KOELN, "iso-8859-1"),
    "cp1252": (_single(CP1252.encode("cp1252"), "windows-1252"), CP1252, "windows-1252"),
    "koi8-r": (_multipart(KOI8.encode("koi8-r"), "koi8-r"), KOI8, "koi8-r"),
    "shift_jis": (_single(SJIS.encode("shift_jis"), "Shift_JIS"), SJIS, "shift_jis"),
    "invalid": (_single(INVALID, None), INVALID_TEXT, "windows-1252"),
}


@pytest.mark.parametrize(("raw", "subject", "used"), CASES.values(), ids=CASES.keys())
def test_summary_and_parse_decode_the_subject_alike_and_record_the_defect(
    raw: bytes, subject: str, used: str
) -> None:
    summary = summarize_headers(raw)
    parsed = parse_message(raw)
    assert summary.subject == parsed.subject == subject
    assert ("Subject", subject, subject) in parsed.headers
    assert _defect("Subject", used) in parsed.defects
    assert summary.defects == (_defect("Subject", used),)


def test_utf8_and_encoded_words_are_decoded_as_before_with_no_defect() -> None:
    raw = _single(
        "Grüße =?iso-8859-1?q?K=F6ln?=".encode(),
        "koi8-r",
        sender=b"=?utf-8?q?J=C3=BCrgen?= <j@example.org>",
    )
    summary, parsed = summarize_headers(raw), parse_message(raw)
    assert summary.subject == parsed.subject == "Grüße Köln"
    assert summary.from_header == "Jürgen <j@example.org>"
    assert parsed.from_ == [("Jürgen", "j@example.org")]
    assert summary.defects == ()
    assert not any("UndeclaredHeaderCharset" in d for d in parsed.defects)


def test_the_first_spelling_names_the_defect_once_per_header() -> None:
    raw = (
        b"From: J\xfcrgen <j@example.org>\r\nX-Note: caf\xe9\r\nx-note: th\xe9\r\n"
        b"Subject: ok\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\nb\r\n"
    )
    parsed = parse_message(raw)
    assert parsed.from_ == [("Jürgen", "j@example.org")]
    assert [d for d in parsed.defects if "Undeclared" in d] == [
        _defect("From", "iso-8859-1"),
        _defect("X-Note", "iso-8859-1"),
    ]
    assert [h for h in parsed.headers if h[0].lower() == "x-note"] == [
        ("X-Note", "café", "café"),
        ("x-note", "thé", "thé"),
    ]


@pytest.mark.parametrize(
    "charset",
    # Not ASCII-compatible: header bytes (ASCII structure) cannot be in these; unknown
    # and undecodable labels fall through too. Each ends at the last resort.
    ["utf-16", "utf-7", "unicode_escape", "x-no-such-charset", "zlib", "us-ascii", "utf-8"],
)
def test_a_charset_headers_cannot_be_in_falls_back_to_windows_1252(charset: str) -> None:
    parsed = parse_message(_single(b"caf\xe9 \x80", charset))
    assert parsed.subject == "café €"
    assert _defect("Subject", "windows-1252") in parsed.defects


def test_a_declared_charset_the_bytes_are_not_valid_in_falls_back_to_windows_1252() -> None:
    # 0x82 0x20 is not Shift_JIS (0x20 is no trail byte).
    parsed = parse_message(_single(b"x \x82 y", "shift_jis"))
    assert parsed.subject == "x \u201a y"
    assert _defect("Subject", "windows-1252") in parsed.defects


def test_a_cut_value_keeps_its_utf8_whole_characters() -> None:
    # 16 KiB of "é" (two bytes each) is cut mid-character: still read as UTF-8.
    subject = "é" * 9000
    parsed = parse_message(_single(subject.encode(), None))
    name, raw, _decoded = parsed.headers[2]
    assert name == "Subject"
    assert set(raw) == {"é"}
    assert not any("Undeclared" in d for d in parsed.defects)
    assert set(summarize_headers(_single(subject.encode(), None)).subject) == {"é"}


def test_filenames_in_8bit_decode_with_the_message_charset() -> None:
    raw = (
        b"Subject: files\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\n"
        b"--zz\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\nx\r\n"
        b"--zz\r\nContent-Type: application/pdf\r\n"
        b'Content-Disposition: attachment; filename="R\xe9sum\xe9.pdf"\r\n\r\n%PDF\r\n--zz--\r\n'
    )
    parsed = parse_message(raw)
    assert [a.filename for a in parsed.attachments] == ["Résumé.pdf"]
    assert "part 3: UndeclaredHeaderCharset: 8-bit filename decoded as iso-8859-1" in (
        parsed.defects
    )


def test_bodies_and_headers_share_one_chain() -> None:
    # A body without a charset is decoded by the same function, with no message charset.
    assert decode_text(b"f\xfcr", None) == ("für", "no charset declared, decoded as windows-1252")
    assert decode_undeclared(b"f\xfcr") == ("für", "windows-1252")
    assert decode_undeclared("für".encode()) == ("für", "")
    assert decode_undeclared(b"\xf0\xd2", "koi8-r") == ("Пр", "koi8-r")
    # The five bytes windows-1252 leaves undefined become U+FFFD; nothing raises.
    assert decode_undeclared(b"\x81\x8d\x8f\x90\x9d") == (BAD * 5, "windows-1252")


# ------------------------------------------------------------------ through SMTP


@pytest.mark.django_db(transaction=True)
def test_8bit_subjects_sent_over_smtp_are_stored_listed_searched_and_titled() -> None:
    Mailbox.objects.create(address="*@our.test")
    with running_server() as server:
        with GuardedSMTP(server.host, server.port, local_hostname="c.test", timeout=30) as client:
            for raw, _subject, _used in CASES.values():
                refused = client.sendmail("sender@example.org", ["user@our.test"], raw)
                assert refused == {}
    messages = list(InboundMessage.objects.order_by("pk"))
    assert len(messages) == len(CASES)
    for message, (name, (raw, subject, used)) in zip(messages, CASES.items(), strict=True):
        assert message.status == InboundMessage.Status.PROCESSED, name
        assert message.subject == subject, name
        assert message.header_values("subject") == [subject], name
        assert _defect("Subject", used) in message.defects, name
        assert str(message) == f"{message.queue_id} {subject}"  # titles, admin log entries
        assert message.raw_bytes.endswith(raw)  # the bytes themselves are untouched
    assert messages[0].from_header == "a@example.org"

    staff = Client()
    staff.force_login(User.objects.create_superuser("boss", "boss@x.test", "pw"))
    url = reverse("admin:inbound_smtp_inboundmessage_changelist")
    listing = staff.get(url).content.decode()
    for _raw, subject, _used in CASES.values():
        assert subject.replace("\u201c", "&ldquo;") in listing or subject in listing
    for word, expected in [("Köln", messages[0]), ("Москвы", messages[2]), ("件名", messages[3])]:
        found = staff.get(url, {"q": word})
        assert list(found.context["cl"].result_list) == [expected], word
    detail = staff.get(reverse("admin:inbound_smtp_inboundmessage_change", args=[messages[0].pk]))
    page = detail.content.decode()
    assert f"<title>{messages[0].queue_id} {KOELN} |" in page
    assert f'<th scope="row">Subject</th><td>{KOELN}</td>' in page  # the decoded headers
    assert BAD not in page

"""Tier 4: mail sent over SMTP is parsed after the 250 into stored fields and
``Attachment`` rows, before ``message_received`` fires; limits keep it raw, never lost."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from django.core.files.storage import storages
from django.test import override_settings

from django_inbound_smtp.lifecycle import extract as extraction
from django_inbound_smtp.models import Attachment, InboundMessage, Mailbox
from django_inbound_smtp.testing import deliver, running_server
from tests.helpers import GuardedSMTP, receiver_connected

pytestmark = pytest.mark.django_db(transaction=True)

FIXTURES = Path(__file__).parent / "fixtures" / "messages"


@pytest.fixture(autouse=True)
def catch_all(db: None) -> Mailbox:
    return Mailbox.objects.create(address="*@our.test")


def _send(server, raw: bytes) -> None:
    with GuardedSMTP(server.host, server.port, local_hostname="c.test", timeout=30) as client:
        client.ehlo()
        client.mail("sender@example.org")
        client.rcpt("user@our.test")
        code, text = client.data(raw)
        assert code == 250, text


def _through_the_listener(*fixtures: str) -> list[InboundMessage]:
    with running_server() as server:
        for name in fixtures:
            _send(server, (FIXTURES / name).read_bytes())
    return list(InboundMessage.objects.order_by("pk"))


def test_receivers_find_parsed_fields_and_attachments_in_place() -> None:
    seen = []

    def receiver(sender, message, **kwargs):
        fresh = InboundMessage.objects.get(pk=message.pk)
        seen.append(
            (
                message.parsed_at is not None,
                fresh.parsed_at is not None,
                [a.filename for a in message.attachments.all()],
                message.html,
            )
        )

    with receiver_connected(receiver):
        [message] = _through_the_listener("mime_inline_cid.eml")
    assert seen == [
        (True, True, ["attachment", "two.gif"], message.html),
    ]
    assert 'src="cid:one@example.org"' in message.html
    assert message.status == InboundMessage.Status.PROCESSED


def test_attachments_are_stored_under_random_names_with_their_digest() -> None:
    [message] = _through_the_listener("mime_inline_cid.eml")
    attachments = list(message.attachments.all())
    assert [(a.position, a.content_type, a.inline) for a in attachments] == [
        (0, "image/png", True),
        (1, "image/gif", True),
    ]
    storage = storages["default"]
    for attachment in attachments:
        data = attachment.read()
        assert hashlib.sha256(data).hexdigest() == attachment.sha256
        assert len(data) == attachment.size
        assert storage.exists(attachment.file)
        # Named by us, never by the sender.
        assert attachment.filename not in attachment.file.rsplit("/", 1)[1]
        assert attachment.file.startswith("inbound_smtp/attachments/")
    cids = message.cid_map()
    assert set(cids) == {"one@example.org", "two@example.org"}
    assert cids["two@example.org"].filename == "two.gif"


def test_hostile_filenames_are_display_names_only() -> None:
    messages = _through_the_listener("mime_filename_traversal.eml", "mime_filename_rtlo.eml")
    names = [a.filename for m in messages for a in m.attachments.all()]
    assert names == ["passwd", "invoicefdp.exe"]
    files = [a.file for m in messages for a in m.attachments.all()]
    assert all(".." not in f and "passwd" not in f and "exe" not in f for f in files)


def test_headers_addresses_and_charsets_are_stored() -> None:
    [latin, cp1252, sjis] = _through_the_listener(
        "mime_iso_8859_1.eml", "mime_windows_1252.eml", "mime_shift_jis.eml"
    )
    assert latin.headers[0][0] == "Received"  # our trace line comes first
    assert latin.headers[1] == ["From", "sender@example.org", "sender@example.org"]
    assert latin.header_values("subject") == ["Café"]
    assert latin.address_list("from") == [("", "sender@example.org")]
    assert latin.address_list("to") == [("", "user@our.test")]
    assert latin.message_id == "<latin1@example.org>"
    for message in (latin, cp1252, sjis):
        assert message.parse_error == ""
        assert message.text
        assert "\ufffd" not in message.text, message.text
    assert sjis.header_values("subject") == [sjis.subject]
    assert sjis.subject == "日本語の件名"


def test_a_message_past_a_parse_limit_is_kept_raw_marked_and_still_processed() -> None:
    parts = ["From: a@example.org\r\nSubject: deep\r\n"]
    parts.append("Content-Type: multipart/mixed; boundary=b0\r\n\r\n")
    for depth in range(1, 40):
        parts.append(f"--b{depth - 1}\r\nContent-Type: multipart/mixed; boundary=b{depth}\r\n\r\n")
    parts.append("--b39\r\n\r\nleaf\r\n")
    raw = "".join(parts).encode()
    with override_settings(INBOUND_SMTP={"HOSTNAME": "mx.test", "PARSE_MAX_DEPTH": 10}):
        with running_server() as server:
            _send(server, raw)
    message = InboundMessage.objects.get()
    assert "10" in message.parse_error
    assert message.parsed_at is not None
    assert message.status == InboundMessage.Status.PROCESSED
    assert message.raw_bytes.endswith(raw)
    assert not message.attachments.exists()


def test_parsing_twice_stores_one_set_of_rows(media: Path) -> None:
    message = deliver((FIXTURES / "mime_nested.eml").read_bytes(), to=["user@our.test"])
    count = Attachment.objects.filter(message=message).count()
    assert count > 0
    message = InboundMessage.objects.get(pk=message.pk)
    assert extraction.extract(message) is False  # parsed_at is set
    message.parsed_at = None  # a stale copy, as a second worker would hold
    assert extraction.extract(message) is False
    assert Attachment.objects.filter(message=message).count() == count
    referenced = set(Attachment.objects.values_list("file", flat=True))
    root = media / "inbound_smtp" / "attachments"
    on_disk = {str(p.relative_to(media)) for p in root.rglob("*") if p.is_file()}
    assert on_disk == referenced  # the second run's files were removed


@pytest.fixture
def media(tmp_path: Path):
    location = {"location": str(tmp_path)}
    backend = "django.core.files.storage.FileSystemStorage"
    with override_settings(STORAGES={"default": {"BACKEND": backend, "OPTIONS": location}}):
        yield tmp_path


def test_a_storage_failure_while_parsing_leaves_no_file_and_is_retried(media: Path) -> None:
    message = deliver((FIXTURES / "mime_inline_cid.eml").read_bytes(), process=False)
    blocker = media / "inbound_smtp" / "attachments"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_bytes(b"")  # a file where the folder must go: every write fails
    try:
        with pytest.raises(OSError, match="inbound_smtp/attachments"):
            extraction.extract(InboundMessage.objects.get(pk=message.pk))
        fresh = InboundMessage.objects.get(pk=message.pk)
        assert fresh.parsed_at is None
        assert not fresh.attachments.exists()
    finally:
        blocker.unlink()
    assert extraction.extract(InboundMessage.objects.get(pk=message.pk)) is True
    assert InboundMessage.objects.get(pk=message.pk).attachments.count() == 2


def test_as_email_gives_a_stdlib_message() -> None:
    message = deliver((FIXTURES / "mime_nested.eml").read_bytes(), to=["user@our.test"])
    parsed = message.as_email()
    assert parsed["Received"].startswith("from")
    assert parsed.get_body(preferencelist=("plain",)) is not None

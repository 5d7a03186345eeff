"""Tier 2: putting a message in from the admin goes the way SMTP mail goes.

Real pieces throughout: Django's test client against the admin, the configured
recipient validators, the store on the test database and inline processing in its
threads (hence a transactional database), awaited with ``schedule.drain``.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from django_inbound_smtp.lifecycle import schedule
from django_inbound_smtp.models import InboundMessage, Mailbox
from django_inbound_smtp.testing import captured_messages

pytestmark = pytest.mark.django_db(transaction=True)

URL = "admin:inbound_smtp_inboundmessage_inject"
# As saved on a Unix machine: LF line ends, and a body line an mbox would quote.
UNIX_FILE = (
    b"From: Alice <alice@example.org>\n"
    b"To: user@our.test\n"
    b"Subject: injected\n"
    b"Message-ID: <inject-1@example.org>\n"
    b"\n"
    b"From here on, a test.\n"
    b"Gr\xc3\xbc\xc3\x9fe\n"
)
SENT = UNIX_FILE.replace(b"\n", b"\r\n")


@pytest.fixture
def boss(transactional_db: None) -> User:
    return User.objects.create_superuser("boss", "boss@x.test", "pw")


@pytest.fixture
def staff(boss: User) -> Client:
    client = Client()
    client.force_login(boss)
    return client


@pytest.fixture
def mailbox(transactional_db: None) -> Mailbox:
    return Mailbox.objects.create(address="user@our.test")


def _post(client: Client, content: bytes, *, to: str = "user@our.test", **extra: str):
    upload = SimpleUploadedFile("test.eml", content, content_type="message/rfc822")
    data = {"mail_from": "alice@example.org", "rcpt_to": to, "eml": upload, **extra}
    return client.post(reverse(URL), data)


def _errors(response) -> str:
    assert response.status_code == 200, response.status_code
    form = response.context["form"]
    return " ".join(str(e) for errors in form.errors.values() for e in errors)


def test_an_injected_message_is_stored_processed_and_attributed(
    staff: Client, boss: User, mailbox: Mailbox
) -> None:
    with captured_messages() as captured:
        response = _post(staff, UNIX_FILE)
        assert schedule.drain(10)
    message = InboundMessage.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse(
        "admin:inbound_smtp_inboundmessage_change", args=[message.pk]
    )
    assert [c.message.pk for c in captured] == [message.pk]
    envelope = captured[0].kwargs["envelope"]
    assert (envelope.received_via, envelope.injected_by) == ("admin", boss.pk)
    assert message.status == InboundMessage.Status.PROCESSED
    # Our Received: line, then the file exactly as an SMTP client sends it (CRLF).
    raw = message.raw_bytes
    trace, content = raw[: -len(SENT)], raw[-len(SENT) :]
    assert content == SENT
    assert trace.startswith(b"Received: from admin (")
    assert f"with HTTP id {message.queue_id}".encode() in trace
    assert trace.endswith(b"\r\n")
    assert trace.count(b"\r\n") == 3
    assert message.size == len(raw)
    assert message.injected_by == boss
    assert message.received_via == InboundMessage.ReceivedVia.ADMIN
    assert (message.peer_ip, message.peer_port, message.helo) == (None, None, "admin")
    assert message.envelope_from == "alice@example.org"
    assert [(r.address, r.mailbox_id) for r in message.recipients.all()] == [
        ("user@our.test", mailbox.pk)
    ]
    assert not message.bare_newlines  # a consistent Unix file is not "bare LF"
    listing = staff.get(reverse("admin:inbound_smtp_inboundmessage_changelist"))
    assert "injected by boss" in listing.content.decode()
    page = staff.get(reverse("admin:inbound_smtp_inboundmessage_change", args=[message.pk]))
    assert "admin (injected)" in page.content.decode()


def test_a_pasted_source_is_stored_as_the_browser_sent_it(staff: Client, mailbox: Mailbox) -> None:
    source = "Subject: pasted\r\n\r\nline one\r\n.\r\nline two"  # no final line end
    response = staff.post(
        reverse(URL),
        {"mail_from": "", "rcpt_to": "<user@our.test>\n USER@our.test", "source": source},
    )
    assert schedule.drain(10)
    assert response.status_code == 302
    message = InboundMessage.objects.get()
    assert message.raw_bytes.endswith(source.encode() + b"\r\n")
    assert message.envelope_from == ""  # the null sender
    assert [r.address for r in message.recipients.all()] == ["user@our.test"]  # one RCPT


def test_recipients_go_through_the_rcpt_validators(staff: Client, mailbox: Mailbox) -> None:
    response = _post(staff, UNIX_FILE, to="user@our.test\nnobody@our.test\nsomeone@else.test")
    errors = _errors(response)
    assert "550 5.1.1 <nobody@our.test>: Recipient address rejected: User unknown" in errors
    assert "550 5.7.1 <someone@else.test>: Relay access denied" in errors
    assert "user@our.test" not in errors
    syntax = _errors(_post(staff, UNIX_FILE, to="not-an-address"))
    assert "501 5.1.3" in syntax
    assert not InboundMessage.objects.exists()


def test_reinjecting_the_same_message_is_a_duplicate_as_over_smtp(
    staff: Client, mailbox: Mailbox
) -> None:
    with captured_messages() as captured:
        _post(staff, UNIX_FILE)
        assert schedule.drain(10)
        again = _post(staff, UNIX_FILE)
        assert schedule.drain(10)
    first, second = InboundMessage.objects.order_by("pk")
    assert again.status_code == 302
    assert second.status == InboundMessage.Status.DUPLICATE
    assert second.duplicate_of == first
    assert second.raw_file == first.raw_file
    assert len(captured) == 1  # the repeat is recorded, never processed
    shown = [str(m) for m in staff.get(again["Location"]).context["messages"]]
    assert any("a duplicate of message" in text for text in shown)


def test_the_size_limit_is_a_form_error(staff: Client, mailbox: Mailbox, settings) -> None:
    settings.INBOUND_SMTP = {**settings.INBOUND_SMTP, "MAX_MESSAGE_SIZE": len(SENT) - 1}
    errors = _errors(_post(staff, UNIX_FILE))
    assert "552 5.3.4 Message size exceeds fixed maximum message size" in errors
    # The limit counts what a client sends (CRLF), as SMTP's does.
    settings.INBOUND_SMTP = {**settings.INBOUND_SMTP, "MAX_MESSAGE_SIZE": len(UNIX_FILE)}
    assert "552 5.3.4" in _errors(_post(staff, UNIX_FILE))
    settings.INBOUND_SMTP = {**settings.INBOUND_SMTP, "MAX_MESSAGE_SIZE": len(SENT)}
    assert _post(staff, UNIX_FILE).status_code == 302
    assert schedule.drain(10)


def test_bare_newlines_follow_the_server_policy(staff: Client, mailbox: Mailbox, settings) -> None:
    mixed = b"Subject: mixed\r\n\r\nbare\nline\r\n"
    settings.INBOUND_SMTP = {**settings.INBOUND_SMTP, "BARE_NEWLINES": "reject"}
    assert "550 5.5.2 Error: bare <LF> received" in _errors(_post(staff, mixed))
    settings.INBOUND_SMTP = {**settings.INBOUND_SMTP, "BARE_NEWLINES": "normalize"}
    assert _post(staff, mixed).status_code == 302
    assert schedule.drain(10)
    message = InboundMessage.objects.get()
    assert message.bare_newlines
    assert message.raw_bytes.endswith(b"\r\n\r\nbare\r\nline\r\n")


def test_a_long_line_is_refused_when_a_line_limit_is_set(
    staff: Client, mailbox: Mailbox, settings
) -> None:
    settings.INBOUND_SMTP = {**settings.INBOUND_SMTP, "DATA_LINE_LIMIT": 998}
    long_line = b"Subject: long\r\n\r\n" + b"x" * 999 + b"\r\n"
    assert "500 5.5.2 Error: line too long" in _errors(_post(staff, long_line))
    assert not InboundMessage.objects.exists()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "The submitted file is empty."),
        (b"\n\r\n \n", "The message is empty."),
        (bytes(range(256)) * 4, "must start with a header field"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "must start with a header field"),
        (b"Subject: x\r\nX-Bin: \x00\x01\r\n\r\nbody\r\n", "NUL bytes"),
        (b"From alice@example.org Sun Dec  6 10:00:00 2026\nSubject: x\n\nhi\n", "mbox"),
    ],
)
def test_what_is_not_a_message_is_a_form_error(
    staff: Client, mailbox: Mailbox, content: bytes, expected: str
) -> None:
    assert expected in _errors(_post(staff, content))
    assert not InboundMessage.objects.exists()


def test_a_file_or_a_source_but_not_both_nor_neither(staff: Client, mailbox: Mailbox) -> None:
    both = _post(staff, UNIX_FILE, source="Subject: x\r\n\r\ny\r\n")
    assert "not both" in str(both.context["form"].non_field_errors())
    neither = staff.post(reverse(URL), {"rcpt_to": "user@our.test"})
    assert "Upload a message file or paste its source" in str(
        neither.context["form"].non_field_errors()
    )


def test_injecting_needs_the_inject_permission(mailbox: Mailbox) -> None:
    url = reverse(URL)
    anonymous = Client().get(url)
    assert anonymous.status_code == 302
    assert "/login/" in anonymous["Location"]
    clerk = User.objects.create_user("clerk", password="pw", is_staff=True)
    clerk.user_permissions.add(Permission.objects.get(codename="view_inboundmessage"))
    client = Client()
    client.force_login(clerk)
    assert client.get(url).status_code == 403
    assert _post(client, UNIX_FILE).status_code == 403
    listing = client.get(reverse("admin:inbound_smtp_inboundmessage_changelist"))
    assert url not in listing.content.decode()  # no button either
    clerk.user_permissions.add(Permission.objects.get(codename="inject_message"))
    client.force_login(User.objects.get(pk=clerk.pk))
    form_page = client.get(url)
    assert form_page.status_code == 200
    assert "Largest message accepted: 25.0\xa0MB" in form_page.content.decode()
    listing = client.get(reverse("admin:inbound_smtp_inboundmessage_changelist"))
    assert url in listing.content.decode()
    assert _post(client, UNIX_FILE).status_code == 302
    assert schedule.drain(10)
    assert InboundMessage.objects.get().injected_by_id == clerk.pk


def test_a_storage_failure_is_a_form_error_not_a_500(
    staff: Client, mailbox: Mailbox, settings
) -> None:
    # A fault we cannot produce for real here: storage refusing the write. A storage
    # alias missing from STORAGES makes the store raise as a broken backend would.
    settings.INBOUND_SMTP = {**settings.INBOUND_SMTP, "STORAGE": "missing"}
    response = _post(staff, UNIX_FILE)
    assert response.status_code == 200
    text = str(response.context["form"].non_field_errors())
    assert "Not stored: 451 4.3.0" in text
    assert "(ref " in text
    assert not InboundMessage.objects.exists()


def broken_validator(address: str, **kwargs: object) -> None:
    raise RuntimeError("directory service down: password=hunter2")


def test_envelope_errors_read_as_smtp_replies(staff: Client, mailbox: Mailbox, settings) -> None:
    bad_sender = _errors(_post(staff, UNIX_FILE, mail_from="no-at-sign"))
    assert "501 5.1.7" in bad_sender
    settings.INBOUND_SMTP = {**settings.INBOUND_SMTP, "MAX_RECIPIENTS": 2}
    many = _errors(_post(staff, UNIX_FILE, to="a@our.test, b@our.test; c@our.test"))
    assert "452 4.5.3 Error: too many recipients" in many
    assert "Give at least one recipient" in _errors(_post(staff, UNIX_FILE, to=" ,; "))
    # An upload already larger than the limit is refused before it is read.
    settings.INBOUND_SMTP = {**settings.INBOUND_SMTP, "MAX_MESSAGE_SIZE": 10}
    assert "552 5.3.4" in _errors(_post(staff, UNIX_FILE))
    assert not InboundMessage.objects.exists()


def test_a_failing_validator_is_a_4xx_form_error_without_its_text(
    staff: Client, mailbox: Mailbox, settings
) -> None:
    settings.INBOUND_SMTP = {
        **settings.INBOUND_SMTP,
        "RECIPIENT_VALIDATORS": ["tests.test_admin_inject.broken_validator"],
    }
    errors = _errors(_post(staff, UNIX_FILE))
    assert errors.startswith("451 4.3.0 <user@our.test>: ")
    assert "(ref " in errors
    assert "hunter2" not in errors
    assert not InboundMessage.objects.exists()


def test_a_paste_over_djangos_post_limit_is_a_400_not_a_500(
    staff: Client, mailbox: Mailbox, settings
) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    source = "Subject: big\r\n\r\n" + "x" * 2000 + "\r\n"
    response = staff.post(reverse(URL), {"rcpt_to": "user@our.test", "source": source})
    assert response.status_code == 400
    assert not InboundMessage.objects.exists()


def test_an_upload_past_the_limit_is_not_read_whole(
    staff: Client, mailbox: Mailbox, settings
) -> None:
    settings.INBOUND_SMTP = {**settings.INBOUND_SMTP, "MAX_MESSAGE_SIZE": 64 * 1024}
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1024  # Django would spool anything bigger to disk
    huge = b"Subject: huge\r\n\r\n" + b"x" * 1023 + b"\r\n"
    response = _post(staff, huge * 200)  # ~200 KiB, cut off after the first 64 KiB
    assert "552 5.3.4" in _errors(response)
    assert response.context["form"].too_big
    assert not InboundMessage.objects.exists()


def test_the_inject_form_still_checks_csrf(boss: User, mailbox: Mailbox) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(boss)
    assert _post(client, UNIX_FILE).status_code == 403
    page = client.get(reverse(URL))
    token = page.context["csrf_token"]
    upload = SimpleUploadedFile("test.eml", UNIX_FILE)
    response = client.post(
        reverse(URL),
        {"csrfmiddlewaretoken": token, "rcpt_to": "user@our.test", "eml": upload},
    )
    assert response.status_code == 302
    assert schedule.drain(10)

"""Tier 2: forwarding stored messages by email, and exporting them as mbox.

Forwarding goes through Django's locmem email backend (pytest-django's ``mailoutbox``);
the attachment is checked in the serialized email, byte for byte against the stored
message. The export is parsed back with the stdlib ``mailbox.mbox``.
"""

from __future__ import annotations

import email
import email.policy
import mailbox
import re
from pathlib import Path
from typing import Any

import django
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from django_inbound_smtp import store
from django_inbound_smtp.envelope import ResolvedRecipient
from django_inbound_smtp.models import InboundMessage, Mailbox
from tests.helpers import received_envelope

FORWARD = "admin:inbound_smtp_inboundmessage_forward"
CHANGELIST = "admin:inbound_smtp_inboundmessage_changelist"

# Lines an mbox must quote, 8-bit bytes, a long header: nothing may change on the way.
TRICKY = (
    b"From: Alice <alice@example.org>\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= and a header long enough to be folded by any "
    b"generator that refolds headers at seventy-eight columns\r\n"
    b"X-Raw: caf\xe9\r\n"
    b"\r\n"
    b"From here on, quoted in mbox.\r\n"
    b">From already quoted once.\r\n"
    b" From not at the start.\r\n"
    b"\r\n"
    b"The end.\r\n"
)


def _store(raw: bytes, queue_id: str, *, mail_from: str = "sender@x.test") -> InboundMessage:
    box = Mailbox.objects.get_or_create(address="user@our.test")[0]
    envelope = received_envelope(
        queue_id,
        mail_from=mail_from,
        recipients=(ResolvedRecipient(address="user@our.test", mailbox_id=box.pk),),
    )
    trace = b"Received: from client.test ([192.0.2.7])\r\n\tby mx.test with ESMTP id %s\r\n" % (
        queue_id.encode()
    )
    return InboundMessage.objects.get(pk=store.store_message(envelope, raw, trace=trace))


def _serialized(sent: Any) -> bytes:
    message = sent.message()
    if django.VERSION >= (6, 0):
        return bytes(message.as_bytes(policy=message.policy.clone(linesep="\r\n")))
    return bytes(message.as_bytes(linesep="\r\n"))


def _attached(data: bytes) -> tuple[bytes, bytes]:
    """(headers, body) of the one message/rfc822 part, cut out of the raw email bytes."""
    boundary = email.message_from_bytes(data, policy=email.policy.compat32).get_boundary()
    assert boundary
    parts = data.split(b"\r\n--" + boundary.encode())
    [part] = [p for p in parts if b"Content-Type: message/rfc822" in p.split(b"\r\n\r\n")[0]]
    headers, _, body = part.partition(b"\r\n\r\n")
    return headers, body


def test_forward_sends_the_stored_bytes_as_a_message_rfc822_attachment(
    staff: Client, mailoutbox, settings
) -> None:
    settings.DEFAULT_FROM_EMAIL = "mailroom@our.test"
    message = _store(TRICKY, "QFWD1")
    url = reverse(FORWARD)
    page = staff.get(f"{url}?ids={message.pk}")
    assert page.status_code == 200
    assert "QFWD1" in page.content.decode()
    response = staff.post(
        url, {"ids": str(message.pk), "to": "dev@example.net", "note": "Look at this one."}
    )
    assert response.status_code == 302
    [sent] = mailoutbox
    assert sent.to == ["dev@example.net"]
    assert sent.from_email == "mailroom@our.test"
    assert sent.reply_to == ["boss@x.test"]
    assert sent.subject.startswith("Fwd: Grüße and a header")
    assert "Look at this one." in sent.body
    assert "Forwarded by boss" in sent.body
    assert "QFWD1" in sent.body
    headers, body = _attached(_serialized(sent))
    assert body == message.raw_bytes  # byte for byte, trace line included
    assert b'filename="QFWD1.eml"' in headers
    assert b"Content-Transfer-Encoding: 8bit" in headers


def test_forward_from_the_list_and_the_message_page(staff: Client, mailoutbox) -> None:
    first, second = (
        _store(b"Subject: one\r\n\r\n1\r\n", "QONE"),
        _store(b"Subject: two\r\n\r\n2\r\n", "QTWO"),
    )
    chosen = staff.post(
        reverse(CHANGELIST),
        {"action": "forward_selected", "_selected_action": [first.pk, second.pk]},
    )
    assert chosen.status_code == 302
    assert chosen["Location"].startswith(reverse(FORWARD) + "?ids=")
    ids = chosen["Location"].split("ids=")[1]
    staff.post(reverse(FORWARD), {"ids": ids, "to": "dev@example.net"})
    assert sorted(m.subject for m in mailoutbox) == ["Fwd: one", "Fwd: two"]
    for sent in mailoutbox:
        assert b"Content-Transfer-Encoding: 7bit" in _attached(_serialized(sent))[0]
    page = staff.get(reverse("admin:inbound_smtp_inboundmessage_change", args=[first.pk]))
    assert f"{reverse(FORWARD)}?ids={first.pk}" in page.content.decode()
    gone = staff.get(f"{reverse(FORWARD)}?ids=999999")
    assert gone.status_code == 302
    assert gone["Location"] == reverse(CHANGELIST)


def test_forwarding_many_takes_the_first_twenty(staff: Client, mailoutbox) -> None:
    stored = [_store(b"Subject: m%d\r\n\r\nx\r\n" % i, f"QMANY{i}") for i in range(21)]
    chosen = staff.post(
        reverse(CHANGELIST),
        {"action": "forward_selected", "_selected_action": [m.pk for m in stored]},
        follow=True,
    )
    assert len(chosen.context["chosen"]) == 20
    assert any("At most 20" in str(m) for m in chosen.context["messages"])


def test_a_failing_email_backend_is_a_form_error(staff: Client, settings) -> None:
    # The relay cannot be reached: the SMTP backend pointed at a closed loopback port.
    backend = "django.core.mail.backends.smtp.EmailBackend"
    if django.VERSION >= (6, 1):  # MAILERS replaces the EMAIL_* settings
        options = {"host": "127.0.0.1", "port": 9, "timeout": 5}
        settings.MAILERS = {"default": {"BACKEND": backend, "OPTIONS": options}}
    else:
        settings.EMAIL_BACKEND = backend
        settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", 9, 5
    message = _store(b"Subject: one\r\n\r\n1\r\n", "QFAIL")
    response = staff.post(reverse(FORWARD), {"ids": str(message.pk), "to": "dev@example.net"})
    assert response.status_code == 200
    assert "QFAIL was not sent: the email backend failed (ref " in str(
        response.context["form"].non_field_errors()
    )


def test_forwarding_needs_view_and_forward_permissions(db, mailoutbox) -> None:
    message = _store(b"Subject: one\r\n\r\n1\r\n", "QPERM")
    url = f"{reverse(FORWARD)}?ids={message.pk}"
    page_url = reverse("admin:inbound_smtp_inboundmessage_change", args=[message.pk])
    clerk = User.objects.create_user("clerk", password="pw", is_staff=True)
    client = Client()
    client.force_login(clerk)
    assert client.get(url).status_code == 403
    clerk.user_permissions.add(Permission.objects.get(codename="view_inboundmessage"))
    client.force_login(User.objects.get(pk=clerk.pk))
    assert client.get(url).status_code == 403
    assert client.post(url, {"ids": str(message.pk), "to": "x@example.net"}).status_code == 403
    assert url not in client.get(page_url).content.decode()
    clerk.user_permissions.add(Permission.objects.get(codename="forward_message"))
    client.force_login(User.objects.get(pk=clerk.pk))
    assert client.get(url).status_code == 200
    assert url in client.get(page_url).content.decode()
    assert mailoutbox == []


def _export(client: Client, pks: list[int]):
    return client.post(reverse(CHANGELIST), {"action": "export_mbox", "_selected_action": pks})


def _unquote_mboxrd(data: bytes) -> bytes:
    return re.sub(rb"(?m)^>(>*From )", rb"\1", data)


def test_export_is_a_streamed_mboxrd_file_that_reads_back(staff: Client, tmp_path: Path) -> None:
    tricky = _store(TRICKY, "QEXP1")
    bounce = _store(b"Subject: bounce\r\n\r\nno final line end", "QEXP2", mail_from="")
    response = _export(staff, [bounce.pk, tricky.pk])
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "application/mbox"
    assert re.fullmatch(
        r'attachment; filename="messages-\d{8}-\d{6}\.mbox"', response["Content-Disposition"]
    )
    data = b"".join(response.streaming_content)
    assert b"\r\n" not in data  # mbox is LF-based
    assert b"\n>From here on, quoted in mbox.\n" in data
    assert b"\n>>From already quoted once.\n" in data
    assert b"\n From not at the start.\n" in data
    path = tmp_path / "export.mbox"
    path.write_bytes(data)
    box = mailbox.mbox(str(path), create=False)
    try:
        keys = list(box.keys())
        assert len(keys) == 2
        stored = {m.queue_id: m for m in (tricky, bounce)}
        # Oldest first; the null sender is MAILER-DAEMON in the From_ line.
        assert box[keys[0]].get_from().startswith("sender@x.test ")
        assert box[keys[1]].get_from().startswith("MAILER-DAEMON ")
        for key, queue_id in zip(keys, ("QEXP1", "QEXP2"), strict=True):
            exported = _unquote_mboxrd(box.get_bytes(key))
            expected = stored[queue_id].raw_bytes.replace(b"\r\n", b"\n")
            if not expected.endswith(b"\n"):
                expected += b"\n"  # the documented line end added to an unfinished last line
            assert exported == expected
    finally:
        box.close()


def test_export_needs_the_view_permission_and_skips_a_missing_file(db, tmp_path: Path) -> None:
    kept = _store(b"Subject: kept\r\n\r\nk\r\n", "QKEPT")
    lost = _store(b"Subject: lost\r\n\r\nl\r\n", "QLOST")
    lost.storage.delete(lost.raw_file)
    clerk = User.objects.create_user("clerk", password="pw", is_staff=True)
    clerk.user_permissions.add(Permission.objects.get(codename="view_inboundmessage"))
    client = Client()
    client.force_login(clerk)
    response = _export(client, [kept.pk, lost.pk])
    data = b"".join(response.streaming_content)
    assert data.count(b"\nFrom ") + data.startswith(b"From ") == 1
    assert b"Subject: kept" in data
    assert b"Subject: lost" not in data


def test_export_fetches_rows_in_batches_as_it_streams(db, monkeypatch) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from django_inbound_smtp.admin import export

    monkeypatch.setattr(export, "ROWS", 2)
    stored = [_store(b"Subject: s%d\r\n\r\nx\r\n" % i, f"QBATCH{i}") for i in range(5)]
    stream = export.mbox_stream([m.pk for m in stored])
    with CaptureQueriesContext(connection) as queries:
        first = next(stream)
        assert len(queries) == 1  # only the first batch is read to start the download
        rest = b"".join(stream)
    assert len(queries) == 3
    assert first.startswith(b"From sender@x.test ")
    assert (first + rest).count(b"\nSubject: s") == 5

"""Tier 2: ``manage.py inbound_import --mbox/--maildir`` with real files: mboxrd
unquoting, Maildir new/ and cur/, recipients from the header, resuming, the summary
and the progress display."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from django_inbound_smtp.management.importing.outcomes import Summary
from django_inbound_smtp.management.importing.progress import Progress
from django_inbound_smtp.management.importing.reading import MboxSource, crlf
from django_inbound_smtp.models import InboundMessage, Mailbox

pytestmark = pytest.mark.django_db(transaction=True)

# mboxrd, as an mbox export writes it: the second message's body has a line that
# started with "From " (quoted once) and one that started with ">From " (quoted twice).
MBOX = b"""From alice@example.org Tue Oct 10 12:00:00 2023
From: Alice <alice@example.org>
To: user@our.test
Subject: one
Message-ID: <one@example.org>

hello

From bob@example.org Wed Oct 11 08:30:00 2023
From: Bob <bob@example.org>
To: Someone <someone@elsewhere.test>, user@our.test
Subject: two
Message-ID: <two@example.org>

>From the start, a body line.
>>From a quoted one.
end

From MAILER-DAEMON Thu Oct 12 09:00:00 2023
Delivered-To: user@our.test
To: list@lists.example
Subject: three
Message-ID: <three@example.org>

bounce

"""


def _run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("inbound_import", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def mailbox(transactional_db: None) -> Mailbox:
    return Mailbox.objects.create(address="user@our.test")


def test_an_mbox_is_imported_unquoted_then_a_rerun_stores_nothing_new(
    mailbox: Mailbox, tmp_path: Path
) -> None:
    path = tmp_path / "export.mbox"
    path.write_bytes(MBOX)

    out, _ = _run("--mbox", str(path))

    assert "Stored 3 new message(s)." in out.splitlines()
    messages = {m.subject: m for m in InboundMessage.objects.all()}
    assert sorted(messages) == ["one", "three", "two"]
    two = messages["two"].raw_bytes
    assert two.endswith(b"\r\n\r\nFrom the start, a body line.\r\n>From a quoted one.\r\nend\r\n")
    assert b"\n" not in two.replace(b"\r\n", b"")  # CRLF only, as on the wire
    assert messages["one"].envelope_from == "alice@example.org"
    assert messages["three"].envelope_from == ""  # MAILER-DAEMON: the null sender
    assert messages["one"].received_at.isoformat() == "2023-10-10T12:00:00+00:00"
    # Header rule: To/Cc addresses we accept (someone@elsewhere.test is not ours);
    # Delivered-To wins over To.
    for message in messages.values():
        assert list(message.recipients.values_list("address", flat=True)) == ["user@our.test"]
    assert {m.status for m in messages.values()} == {"processed"}
    assert {m.received_via for m in messages.values()} == {"import"}

    out, _ = _run("--mbox", str(path))

    assert "Stored 0 new message(s)." in out
    assert "Skipped 3 already imported (nothing new stored for them)." in out
    assert "Nothing new: every message was stored before or refused." in out
    assert InboundMessage.objects.count() == 3


def test_a_maildir_imports_new_and_cur_not_tmp(mailbox: Mailbox, tmp_path: Path) -> None:
    for sub in ("new", "cur", "tmp"):
        (tmp_path / sub).mkdir()
    (tmp_path / "new" / "1.host").write_bytes(
        b"Delivered-To: user@our.test\nSubject: new one\n\nbody\n"
    )
    (tmp_path / "cur" / "2.host:2,S").write_bytes(
        b"X-Original-To: user@our.test\nTo: other@x.test\nSubject: seen one\n\nbody\n"
    )
    (tmp_path / "cur" / "3.host:2,S").write_bytes(
        b"Delivered-To: nobody@our.test\nSubject: not ours\n\nbody\n"
    )
    (tmp_path / "tmp" / "4.host").write_bytes(b"Subject: half-written\n\nbo")

    out, _ = _run("--maildir", str(tmp_path), "--sender", "archive@example.org")

    assert "Stored 2 new message(s)." in out
    assert "Refused 1: unknown recipient." in out
    stored = InboundMessage.objects.order_by("subject")
    assert [m.subject for m in stored] == ["new one", "seen one"]
    assert {m.envelope_from for m in stored} == {"archive@example.org"}


def test_recipient_option_overrides_the_header(mailbox: Mailbox, tmp_path: Path) -> None:
    path = tmp_path / "export.mbox"
    path.write_bytes(MBOX)
    Mailbox.objects.create(address="archive@our.test")
    out, _ = _run("--mbox", str(path), "--recipient", "archive@our.test")
    assert "Stored 3 new message(s)." in out
    addresses = set(InboundMessage.objects.values_list("recipients__address", flat=True))
    assert addresses == {"archive@our.test"}


def test_a_large_message_streams_through_a_spool_file_byte_exact(
    mailbox: Mailbox, tmp_path: Path
) -> None:
    body = b"".join(b"line %06d of a long message\n" % n for n in range(2000))
    path = tmp_path / "big.mbox"
    path.write_bytes(b"From a@x.test Tue Oct 10 12:00:00 2023\nTo: user@our.test\n\n" + body)
    with override_settings(INBOUND_SMTP={"HOSTNAME": "mx.test", "SPOOL_MEMORY_LIMIT": 4096}):
        out, _ = _run("--mbox", str(path), "--batch", "1")
    assert "Stored 1 new message(s)." in out
    raw = InboundMessage.objects.get().raw_bytes
    assert raw.endswith(b"\r\n\r\n" + body.replace(b"\n", b"\r\n"))


def test_messages_over_the_size_limit_are_refused_and_the_rest_imported(
    mailbox: Mailbox, tmp_path: Path
) -> None:
    path = tmp_path / "export.mbox"
    big = b"x" * 5000 + b"\n"
    path.write_bytes(MBOX.replace(b"hello\n", big))
    with override_settings(INBOUND_SMTP={"HOSTNAME": "mx.test", "MAX_MESSAGE_SIZE": 2000}):
        out, _ = _run("--mbox", str(path))
    assert "Stored 2 new message(s)." in out
    assert "Refused 1: too big." in out
    assert sorted(InboundMessage.objects.values_list("subject", flat=True)) == ["three", "two"]


def test_a_missing_source_is_66(transactional_db: None, tmp_path: Path) -> None:
    with pytest.raises(CommandError, match=r"cannot read .*missing\.mbox: No such file") as raised:
        _run("--mbox", str(tmp_path / "missing.mbox"))
    assert raised.value.returncode == 66
    (tmp_path / "new").mkdir()
    with pytest.raises(CommandError, match=r"is not a Maildir folder: it has no cur/$") as raised:
        _run("--maildir", str(tmp_path))
    assert raised.value.returncode == 66


def test_the_mbox_reader_is_lazy(tmp_path: Path) -> None:
    path = tmp_path / "export.mbox"
    path.write_bytes(MBOX)
    source = MboxSource(str(path))
    messages = iter(source)
    first = next(messages)
    assert source.done == 0  # nothing past the first From_ line read yet
    assert b"".join(first.chunks).endswith(b"hello\r\n")
    second = next(messages)
    assert 0 < source.done < source.total
    assert second.mail_from == "bob@example.org"
    assert [m.label for m in messages] == ["message 3"]
    assert source.done == source.total


def test_crlf_conversion_across_chunk_borders() -> None:
    assert b"".join(crlf([b"a\r", b"\nb\n", b"c\r\n", b"\n", b"lone\rcr\r"])) == (
        b"a\r\nb\r\nc\r\n\r\nlone\rcr\r"
    )


def test_progress_is_a_bar_on_a_terminal_and_lines_elsewhere() -> None:
    source = MboxSource.__new__(MboxSource)
    source.done, source.total, source.unit = 50, 100, "bytes"
    summary = Summary(stored=3, already=1)
    terminal = io.StringIO()
    bar = Progress(terminal, tty=True)
    bar.update(source, summary, force=True)
    bar.close()
    assert terminal.getvalue().startswith("\r[###############---------------]  50% 4 read")
    log = io.StringIO()
    Progress(log, tty=False).update(source, summary, force=True)
    assert log.getvalue() == "50% of 100 bytes; 4 read: 3 stored, 1 duplicates, 0 refused\n"


def test_a_from_inside_a_long_line_is_no_separator(tmp_path: Path) -> None:
    # The line is read in 64 KiB pieces; the second piece starts with "From ", but not
    # at the start of a line.
    long_line = b"x" * 65536 + b"From not a separator\n"
    path = tmp_path / "long.mbox"
    path.write_bytes(b"From a@x.test Tue Oct 10 12:00:00 2023\nSubject: long\n\n" + long_line)
    messages = [b"".join(message.chunks) for message in MboxSource(str(path))]
    assert messages == [b"Subject: long\r\n\r\n" + long_line.replace(b"\n", b"\r\n")]


def test_header_recipients_over_max_recipients_are_refused(
    mailbox: Mailbox, tmp_path: Path
) -> None:
    Mailbox.objects.create(address="other@our.test")
    path = tmp_path / "export.mbox"
    path.write_bytes(
        b"From a@x.test Tue Oct 10 12:00:00 2023\nTo: user@our.test, other@our.test\n\nx\n"
    )
    with override_settings(INBOUND_SMTP={"HOSTNAME": "mx.test", "MAX_RECIPIENTS": 1}):
        out, _ = _run("--mbox", str(path))
    assert "Refused 1: too many recipients." in out
    assert not InboundMessage.objects.exists()


def test_an_unreadable_source_is_74(transactional_db: None, tmp_path: Path) -> None:
    folder = tmp_path / "a-folder.mbox"
    folder.mkdir()
    with pytest.raises(CommandError, match="cannot read .*a-folder.mbox") as raised:
        _run("--mbox", str(folder))
    assert raised.value.returncode == 74


def test_the_admins_mbox_export_imports_back_byte_for_byte(
    mailbox: Mailbox, tmp_path: Path
) -> None:
    from django_inbound_smtp.admin.export import mbox_stream
    from django_inbound_smtp.testing import deliver

    tricky = b"Subject: tricky\r\n\r\nFrom the start\r\n>From quoted\r\n>>From twice\r\nend"
    originals = [
        deliver(tricky, mail_from="a@x.test", to=["user@our.test"], process=False),
        deliver(b"Subject: bounce\r\n\r\nx\r\n", mail_from="", to=["user@our.test"]),
    ]
    path = tmp_path / "export.mbox"
    path.write_bytes(b"".join(mbox_stream([m.pk for m in originals])))
    InboundMessage.objects.all().delete()

    # The export keeps the envelope sender and time (the From_ line), not the recipients.
    out, _ = _run("--mbox", str(path), "--recipient", "user@our.test")

    assert "Stored 2 new message(s)." in out
    for original in originals:
        copy = InboundMessage.objects.get(subject=original.subject)
        # Our new Received: line on top of exactly what was exported.
        trace, _, rest = copy.raw_bytes.partition(b"\r\n\t")
        assert trace.startswith(b"Received: by mx.test")
        assert rest.split(b"\r\n", 1)[1] == original.raw_bytes + (
            b"\r\n" if not original.raw_bytes.endswith(b"\r\n") else b""
        )
        assert copy.envelope_from == original.envelope_from
        assert copy.received_at == original.received_at.replace(microsecond=0)

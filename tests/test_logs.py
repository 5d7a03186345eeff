"""JSON log lines (``django_inbound_smtp.logging``): the formatter, and the session and
queue ids on the lines of a real SMTP session, including those logged in the database
threads and the processing threads."""

from __future__ import annotations

import io
import json
import logging
import smtplib
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.test import override_settings

from django_inbound_smtp.logging import JSONFormatter, QueueIdFilter, about
from django_inbound_smtp.signals import message_received
from django_inbound_smtp.testing import running_server

validator_log = logging.getLogger("tests.logs.validator")
receiver_log = logging.getLogger("tests.logs.receiver")
BODY = b"Subject: logged\r\n\r\nhello\r\n"
# INBOUND_SMTP of the tests that speak SMTP: the logging validator before the mailbox one.
LOGGED_RCPT = {
    "HOSTNAME": "mx.test",
    "DISPATCH": "inline",
    "RECIPIENT_VALIDATORS": [
        "tests.test_logs.logging_validator",
        "django_inbound_smtp.validators.models.mailbox_validator",
    ],
}


def logging_validator(address: str, *, context: object) -> None:
    """Logs from the database thread it runs in; fails for ``broken@``."""
    validator_log.info("validating %s in %s", address, threading.current_thread().name)
    if address.startswith("broken@"):
        raise RuntimeError("directory down")


@contextmanager
def json_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONFormatter())
    handler.addFilter(QueueIdFilter())
    root = logging.getLogger()
    ours = logging.getLogger("django_inbound_smtp")
    levels = {name: logging.getLogger(name).level for name in ("django_inbound_smtp", "tests.logs")}
    root.addHandler(handler)
    ours.setLevel(logging.DEBUG)
    logging.getLogger("tests.logs").setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def test_every_line_of_a_transaction_carries_its_queue_id(make_mailbox, transactional_db) -> None:
    make_mailbox("user@our.test")
    received = threading.Event()

    def receiver(message, **kwargs) -> None:
        receiver_log.info("receiver got a message in %s", threading.current_thread().name)
        received.set()

    message_received.connect(receiver, weak=False)
    try:
        with json_lines() as stream, override_settings(INBOUND_SMTP=LOGGED_RCPT):
            with running_server() as server:
                client = smtplib.SMTP(server.host, server.port, timeout=10)
                client.ehlo("client.test")
                client.mail("a@example.org")
                assert client.rcpt("broken@our.test")[0] == 451
                assert client.rcpt("user@our.test")[0] == 250
                code, reply = client.data(BODY)
                assert code == 250
                client.quit()
                assert received.wait(10)
    finally:
        message_received.disconnect(receiver)
    queue_id = reply.decode().rsplit(" ", 1)[1]
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    by_message = {line["message"].split(" in ")[0]: line for line in lines}

    rcpt_failure = next(line for line in lines if line["message"].startswith("RCPT hook failed"))
    session = rcpt_failure["session"]
    assert session
    assert rcpt_failure["queue_id"] == queue_id
    assert "RuntimeError: directory down" in rcpt_failure["exception"]
    # In a database thread: the session's context went with the call.
    for address in ("broken@our.test", "user@our.test"):
        line = by_message[f"validating {address}"]
        assert "inbound-smtp-db" in line["message"]
        assert (line["queue_id"], line["session"]) == (queue_id, session)
    stored = next(line for line in lines if line["message"].startswith("stored 1 messages"))
    assert stored["queue_id"] == queue_id
    accepted = next(line for line in lines if line["message"].startswith("accepted "))
    assert (accepted["queue_id"], accepted["session"]) == (queue_id, session)
    assert accepted["peer"] == "127.0.0.1"
    assert isinstance(accepted["message_pk"], int)
    # In a processing thread: the receiver's own line names the message it is about.
    got = by_message["receiver got a message"]
    assert "inbound-smtp-process" in got["message"]
    assert got["queue_id"] == queue_id
    assert by_message[f"processed {queue_id}: processed"]["queue_id"] == queue_id
    # Every line of the session from MAIL on names the message.
    assert all(line["queue_id"] == queue_id for line in lines if line.get("session") == session)


def test_json_formatter_is_one_safe_object_per_line() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONFormatter())
    handler.addFilter(QueueIdFilter())
    log = logging.getLogger("tests.logs.formatter")
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.INFO)
    try:
        with about("ABC123"):
            log.info("HELO %s", 'evil\r\n{"forged": 1}\x00é', extra={"peer": "192.0.2.1"})
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed", extra={"sizes": (1, 2), "when": object})
    finally:
        log.removeHandler(handler)
        log.propagate = True
    text = stream.getvalue()
    assert text.isascii()
    first, second = (json.loads(line) for line in text.splitlines())
    assert first["message"] == 'HELO evil\r\n{"forged": 1}\x00é'
    assert (first["queue_id"], first["peer"], first["level"]) == ("ABC123", "192.0.2.1", "INFO")
    assert first["logger"] == "tests.logs.formatter"
    assert first["time"].endswith("+00:00")
    assert "queue_id" not in second  # outside the block: about no message
    assert second["exception"].startswith("Traceback")
    assert second["exception"].endswith("ValueError: boom")
    assert second["sizes"] == [1, 2]
    assert second["when"] == str(object)


def test_the_filter_feeds_plain_formats_too() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    with about("Q1"):
        assert QueueIdFilter().filter(record)
    assert logging.Formatter("%(queue_id)s|%(session)s|%(message)s").format(record) == "Q1||hello"


def test_rset_and_a_second_transaction_each_get_a_fresh_queue_id(
    make_mailbox, transactional_db
) -> None:
    # The queue id is chosen at MAIL: a transaction given up with RSET and the next
    # one of the same session must not share it (nor their log lines, nor the 250s).
    make_mailbox("user@our.test")
    with json_lines() as stream, override_settings(INBOUND_SMTP=LOGGED_RCPT):
        with running_server() as server:
            client = smtplib.SMTP(server.host, server.port, timeout=10)
            client.ehlo("client.test")
            client.mail("a@example.org")
            assert client.rcpt("user@our.test")[0] == 250
            assert client.rset()[0] == 250
            accepted = []
            for _ in range(2):
                client.mail("a@example.org")
                assert client.rcpt("user@our.test")[0] == 250
                code, reply = client.data(BODY)
                assert code == 250
                accepted.append(reply.decode().rsplit(" ", 1)[1])
            client.quit()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    validated = [
        line["queue_id"] for line in lines if line["message"].startswith("validating user@")
    ]
    assert len(validated) == 3, validated
    assert all(validated), validated
    given_up, *rest = validated
    assert rest == accepted
    assert len({given_up, *accepted}) == 3

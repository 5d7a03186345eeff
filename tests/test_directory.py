"""Tier 2-5: the recipient directory (RCPT without a query per recipient).

Same answers as the database, with or without the directory and when it is too large
to load whole; inside ``DIRECTORY_TTL`` no query and no thread hop per RCPT; a change
reaches two real ``smtpd`` processes within the bound, and an unreadable database
past the bound is ``451``, never an answer from old data.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.core.checks import Error
from django.db import DatabaseError, connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from django_inbound_smtp import replies
from django_inbound_smtp.checks import check_settings
from django_inbound_smtp.envelope import RecipientContext, ResolvedRecipient
from django_inbound_smtp.exceptions import Rejected
from django_inbound_smtp.models import Mailbox
from django_inbound_smtp.smtp import _bridge
from django_inbound_smtp.validators import validate_recipient
from django_inbound_smtp.validators.directory import directory
from django_inbound_smtp.validators.models import mailbox_validator
from tests.helpers import GuardedSMTP, subprocess_env

ROOT = Path(__file__).resolve().parent.parent
BANNER = "Inbound SMTP server listening on 127.0.0.1:"
CONTEXT = RecipientContext(mail_from="a@example.org", peer_host="127.0.0.1", helo="c", tls=False)
MAILBOX_TABLE = Mailbox._meta.db_table

# Address -> expected answer: (mailbox address or None, tag), "unknown" or "relay".
CASES: dict[str, tuple[str | None, str] | str] = {
    "user@our.test": ("user@our.test", ""),
    "USER@Our.Test": ("user@our.test", ""),
    "user+News@our.test": ("user@our.test", "News"),
    "exact+tag@our.test": ("exact+tag@our.test", ""),
    "e\u0301t\u00e9@our.test": ("\u00e9t\u00e9@our.test", ""),  # NFC of a decomposed é
    "nobody@our.test": "unknown",
    "off@our.test": "unknown",  # inactive
    "Postmaster@our.test": (None, ""),
    "postmaster": (None, ""),
    "anyone@catch.test": ("*@catch.test", ""),
    "x@nobody.example": "relay",
    "postmaster@nobody.example": "relay",
}


def _mailboxes() -> dict[str, int]:
    for address in ("user@our.test", "exact+tag@our.test", "\u00e9t\u00e9@our.test"):
        Mailbox.objects.create(address=address)
    Mailbox.objects.create(address="*@catch.test")
    Mailbox.objects.create(address="off@our.test", is_active=False)
    return dict(Mailbox.objects.values_list("address", "pk"))


def _answer(address: str, run_sync: Callable[..., Any]) -> ResolvedRecipient | str:
    try:
        return asyncio.run(validate_recipient(address, context=CONTEXT, run_sync=run_sync))
    except Rejected as refusal:
        return {replies.MAILBOX_UNKNOWN: "unknown", replies.RELAY_DENIED: "relay"}[refusal.reply]


def _expected(address: str, pks: dict[str, int]) -> ResolvedRecipient | str:
    case = CASES[address]
    if isinstance(case, str):
        return case
    owner, tag = case
    return ResolvedRecipient(address=address, mailbox_id=pks.get(owner or ""), tag=tag)


async def no_hop(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("went to a worker thread for an answer memory should give")


@pytest.mark.parametrize(
    "directory_settings",
    [
        pytest.param({"DIRECTORY_TTL": 0}, id="no-directory"),
        pytest.param({"DIRECTORY_TTL": 60}, id="snapshot"),
        # 4 active mailboxes: never loaded whole; 3 facts are enough for one address.
        pytest.param({"DIRECTORY_TTL": 60, "DIRECTORY_MAX_SIZE": 3}, id="too-large"),
    ],
)
def test_answers_are_the_databases_with_and_without_the_directory(
    transactional_db, directory_settings: dict[str, int]
) -> None:
    pks = _mailboxes()
    with override_settings(INBOUND_SMTP=directory_settings):
        for address in CASES:
            assert _answer(address, _bridge.run_sync) == _expected(address, pks), address
            if directory_settings["DIRECTORY_TTL"]:
                # Asked again, the answer comes from memory, on the caller's thread.
                assert _answer(address, no_hop) == _expected(address, pks), address
        if "DIRECTORY_MAX_SIZE" in directory_settings:
            assert directory._snapshot is None
            assert len(directory._facts) <= directory_settings["DIRECTORY_MAX_SIZE"]


def test_inside_the_bound_an_rcpt_costs_no_query_and_no_thread_hop(transactional_db) -> None:
    pks = _mailboxes()
    with override_settings(INBOUND_SMTP={"DIRECTORY_TTL": 60}):
        with CaptureQueriesContext(connection) as loading:  # in this thread, to count
            answer = mailbox_validator("user@our.test", context=CONTEXT)
        assert answer == _expected("user@our.test", pks)
        assert len(loading.captured_queries) == 1  # the whole directory, in one query
        with CaptureQueriesContext(connection) as answering:
            for address in CASES:
                assert _answer(address, no_hop) == _expected(address, pks)
        assert answering.captured_queries == []


def test_the_server_makes_no_mailbox_query_per_rcpt(make_mailbox, smtp_server) -> None:
    make_mailbox("user@our.test")
    seen: list[str] = []

    def count(execute: Callable[..., Any], sql: str, *args: Any) -> Any:
        seen.append(sql)
        return execute(sql, *args)

    def install() -> None:  # in the server's ORM thread, on its own connection
        connection.execute_wrappers.append(count)

    def uninstall() -> None:
        connection.execute_wrappers.remove(count)

    with override_settings(INBOUND_SMTP={"HOSTNAME": "mx.test", "DIRECTORY_TTL": 60}):
        asyncio.run(_bridge.run_sync(install))
        try:
            with GuardedSMTP(smtp_server.host, smtp_server.port, timeout=10) as client:
                client.ehlo("client.test")
                for round_ in range(6):  # 12 refusals: under RCPT_ERROR_LIMIT
                    client.mail("a@example.org")
                    assert client.rcpt(f"user+{round_}@our.test")[0] == 250
                    assert client.rcpt("nobody@our.test")[0] == 550
                    assert client.rcpt("x@elsewhere.example")[0] == 550
                    client.rset()
        finally:
            asyncio.run(_bridge.run_sync(uninstall))
    mailbox_queries = [sql for sql in seen if MAILBOX_TABLE in sql]
    assert len(mailbox_queries) == 1, mailbox_queries  # loading the directory, once


def test_a_save_in_this_process_is_seen_at_once_other_writes_within_the_bound(
    transactional_db,
) -> None:
    with override_settings(INBOUND_SMTP={"DIRECTORY_TTL": 60}):
        box = Mailbox.objects.create(address="user@our.test")
        accepted = ResolvedRecipient(address="user@our.test", mailbox_id=box.pk)
        assert _answer("user@our.test", _bridge.run_sync) == accepted
        box.is_active = False
        box.save()  # post_save: this process's directory is dropped
        assert _answer("user@our.test", _bridge.run_sync) == "relay"
        assert _answer("user@our.test", no_hop) == "relay"
        # A queryset update sends no signal: the old answer stands until the bound...
        Mailbox.objects.filter(pk=box.pk).update(is_active=True)
        assert _answer("user@our.test", no_hop) == "relay"
        directory.clear()  # ...which is what its expiry does
        assert _answer("user@our.test", _bridge.run_sync) == accepted


def test_the_directory_never_answers_from_data_older_than_the_bound(transactional_db) -> None:
    box = Mailbox.objects.create(address="user@our.test")
    with override_settings(INBOUND_SMTP={"DIRECTORY_TTL": 1}):
        loaded = time.monotonic()
        assert directory.lookup(["user@our.test"], "our.test").owners == {"user@our.test": box.pk}
        with _table_renamed():  # a real fault: the database cannot answer
            if time.monotonic() - loaded < 1:  # inside the bound: memory answers
                assert directory.lookup(["user@our.test"], "our.test").served
            time.sleep(max(0.0, loaded + 1.05 - time.monotonic()))
            assert directory.from_memory(["user@our.test"], "our.test") is None
            with pytest.raises(DatabaseError, match=MAILBOX_TABLE):
                directory.lookup(["user@our.test"], "our.test")
        assert directory.lookup(["user@our.test"], "our.test").served


@contextmanager
def _table_renamed() -> Iterator[None]:
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {MAILBOX_TABLE} RENAME TO {MAILBOX_TABLE}_away")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE {MAILBOX_TABLE}_away RENAME TO {MAILBOX_TABLE}")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"DIRECTORY_TTL": -1}, "INBOUND_SMTP['DIRECTORY_TTL'] must be a positive number."),
        ({"DIRECTORY_TTL": "5"}, "INBOUND_SMTP['DIRECTORY_TTL'] must be a positive number."),
        (
            {"DIRECTORY_MAX_SIZE": 0},
            "INBOUND_SMTP['DIRECTORY_MAX_SIZE'] must be a positive integer.",
        ),
    ],
)
def test_the_directory_settings_are_checked(value: dict[str, object], message: str) -> None:
    with override_settings(INBOUND_SMTP=value):
        got = value[next(iter(value))]
        assert check_settings() == [Error(message, hint=f"Got {got!r}.", id="inbound_smtp.E002")]
    with override_settings(INBOUND_SMTP={"DIRECTORY_TTL": 0}):
        assert check_settings() == []  # 0: no directory


# --- Two real smtpd processes ---------------------------------------------------------

TTL = 1.0


class Smtpd:
    """``python -m django smtpd 127.0.0.1:0`` with ``DIRECTORY_TTL = TTL``; its output is
    drained by a thread (a full pipe would block it) and kept for failure messages."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "django", "smtpd", "127.0.0.1:0", "--skip-checks"],
            cwd=ROOT,
            env=subprocess_env(INBOUND_TEST_DIRECTORY_TTL=str(TTL)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output: list[str] = []
        self.port = 0
        found = threading.Event()

        def drain() -> None:
            assert self.process.stdout is not None
            with self.process.stdout:
                for line in self.process.stdout:
                    self.output.append(line)
                    if line.startswith(BANNER) and not found.is_set():
                        self.port = int(line.strip().rsplit(":", 1)[1])
                        found.set()

        self._drainer = threading.Thread(target=drain, daemon=True)
        self._drainer.start()
        if not found.wait(60):
            self.stop()
            raise AssertionError(f"no banner: {''.join(self.output)}")

    def rcpt(self, *addresses: str) -> list[int]:
        """One new session: the reply code of each ``RCPT TO``."""
        with GuardedSMTP("127.0.0.1", self.port, local_hostname="client.test", timeout=10) as s:
            s.ehlo()
            s.mail("a@example.org")
            return [s.rcpt(address)[0] for address in addresses]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        finally:
            if self.process.poll() is None:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
            self._drainer.join(10)


def _within_the_bound(servers: list[Smtpd], addresses: tuple[str, ...], want: list[int]) -> None:
    """Probe every server, one session per probe, until each has answered ``want`` and
    ``TTL`` + a margin has passed since the change. Every probe that *started* more than
    ``TTL`` after the change must already answer ``want``: that is the guarantee."""
    changed_at = time.monotonic()
    probes: list[tuple[float, int, list[int]]] = []
    while True:
        for index, server in enumerate(servers):
            started = time.monotonic()
            probes.append((started - changed_at, index, server.rcpt(*addresses)))
        late = [probe for probe in probes if probe[0] > TTL]
        if {index for _, index, codes in late if codes == want} == set(range(len(servers))):
            break
        assert time.monotonic() - changed_at < TTL + 10, probes
        time.sleep(0.05)
    assert all(codes == want for _, _, codes in late), probes


@pytest.mark.integration
@pytest.mark.slow
def test_a_change_reaches_two_processes_within_the_bound(transactional_db) -> None:
    Mailbox.objects.create(address="keep@our.test")  # the domain stays served
    servers: list[Smtpd] = []
    try:
        servers += [Smtpd(), Smtpd()]
        addresses = ("new@our.test", "gone@our.test", "keep@our.test")
        assert [server.rcpt(*addresses) for server in servers] == [[550, 550, 250]] * 2

        Mailbox.objects.create(address="new@our.test")
        Mailbox.objects.create(address="gone@our.test")
        _within_the_bound(servers, addresses, [250, 250, 250])

        Mailbox.objects.filter(address="new@our.test").update(is_active=False)  # no signal
        Mailbox.objects.filter(address="gone@our.test").delete()
        _within_the_bound(servers, addresses, [550, 550, 250])

        # The database cannot be read: past the bound, 451, never the old answer.
        with _table_renamed():
            _within_the_bound(servers, ("keep@our.test",), [451])
        _within_the_bound(servers, ("keep@our.test",), [250])
    finally:
        for server in servers:
            server.stop()

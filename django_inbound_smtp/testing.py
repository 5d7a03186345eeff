"""Test utilities for projects using django-inbound-smtp (public API).

- :func:`deliver` / :func:`adeliver` push a message through the same pipeline as the
  server (recipient validators, the write path, processing with its signal and
  mailbox handlers), without sockets, in the caller's thread and transaction: they
  work in plain ``TestCase`` / ``@pytest.mark.django_db`` tests.
- :func:`captured_messages` records what ``message_received`` was sent for.
- :func:`running_server` (and the pytest fixture ``inbound_smtp_server``) runs the real
  listener on a loopback ephemeral port in a background thread, for tests that speak
  SMTP. Those need a database visible from other threads: pytest-django's
  ``transactional_db`` or Django's ``TransactionTestCase``.

To use the fixture, add ``pytest_plugins = ["django_inbound_smtp.testing"]`` to your
``conftest.py``.
"""

from __future__ import annotations

import asyncio
import email.message
import email.policy
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import getaddresses
from typing import TYPE_CHECKING, Any, Protocol

from asgiref.sync import sync_to_async

from django_inbound_smtp import store, validators
from django_inbound_smtp._db import unit_of_work
from django_inbound_smtp.envelope import ReceivedEnvelope, RecipientContext
from django_inbound_smtp.exceptions import TemporaryFailure
from django_inbound_smtp.lifecycle import process as processing
from django_inbound_smtp.lifecycle import schedule
from django_inbound_smtp.signals import message_received
from django_inbound_smtp.smtp._trace import new_queue_id, received_header
from django_inbound_smtp.smtp.server import InboundServer
from django_inbound_smtp.validators import quota

if TYPE_CHECKING:
    from django_inbound_smtp.models import InboundMessage

__all__ = [
    "CapturedMessage",
    "RunningServer",
    "ServerThread",
    "adeliver",
    "captured_messages",
    "captured_tasks",
    "deliver",
    "running_server",
]


class _HasMessage(Protocol):
    """Django's ``EmailMessage`` (anything with ``message()``)."""

    def message(self) -> email.message.Message: ...


MessageLike = bytes | email.message.Message | _HasMessage


def _to_bytes(message: MessageLike) -> bytes:
    if isinstance(message, bytes):
        return message
    if isinstance(message, email.message.Message):
        return message.as_bytes(policy=email.policy.SMTP)
    # Django's message objects differ between versions; SMTP carries CRLF either way.
    built = message.message().as_bytes()
    return built.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _header_recipients(content: bytes) -> list[str]:
    parsed = email.message_from_bytes(content, policy=email.policy.compat32)
    fields = [str(v) for name in ("To", "Cc", "Bcc") for v in parsed.get_all(name, [])]
    return [address for _name, address in getaddresses(fields) if address]


def deliver(
    message: MessageLike,
    *,
    mail_from: str = "sender@example.org",
    to: Sequence[str] | None = None,
    process: bool = True,
    peer_host: str = "192.0.2.1",
    helo: str = "client.example.org",
) -> InboundMessage:
    """Deliver ``message`` as if it had arrived over SMTP; return the stored message.

    ``message`` is raw bytes, a stdlib ``email.message.Message`` or Django's
    ``EmailMessage``. ``to`` is the envelope (default: the To, Cc and Bcc addresses).
    Every recipient goes through the configured validators and its mailbox's quota
    first: a refused one raises ``Rejected`` or ``TemporaryFailure``, as the server
    would have answered it. With
    ``process`` (the default) processing runs now, in this thread: ``message_received``
    receivers and mailbox handlers have run when this returns. Synchronous.
    """
    from django_inbound_smtp.models import InboundMessage

    content = _to_bytes(message)
    addresses = list(to) if to is not None else _header_recipients(content)
    context = RecipientContext(mail_from=mail_from, peer_host=peer_host, helo=helo, tls=False)
    resolved = tuple(
        # In the caller's thread, so validators see its transaction.
        validators.validate_recipient_here(address, context=context)
        for address in addresses
    )
    for recipient in resolved:  # a full mailbox, as at RCPT: 452 4.2.2
        if (full := quota.refusal_at_rcpt(recipient)) is not None:
            raise TemporaryFailure(full)
    envelope = ReceivedEnvelope(
        queue_id=new_queue_id(),
        mail_from=mail_from,
        recipients=resolved,
        peer_host=peer_host,
        peer_port=None,
        helo=helo,
        tls=False,
        esmtp=True,
        received_at=datetime.now(UTC),
    )
    trace = received_header(
        helo=helo,
        peer_host=peer_host,
        hostname="testing",
        queue_id=envelope.queue_id,
        recipients=envelope.rcpt_tos,
        esmtp=True,
        tls=False,
        when=envelope.received_at,
    )
    # No after-commit hook: the kit processes right here, in the caller's thread.
    pk = store.store_message(envelope, content, trace=trace)
    if process:
        processing.process_message(pk, owner="testing")
    return InboundMessage.objects.get(pk=pk)


async def adeliver(message: MessageLike, **options: Any) -> InboundMessage:
    """:func:`deliver` for async tests. It runs in Django's sync thread, which has its
    own database connection: use a transactional test database. That connection is
    closed afterwards as a request's would be (``CONN_MAX_AGE``), so it cannot keep the
    test database from being dropped at the end of the session."""
    return await sync_to_async(_deliver_and_tidy)(message, **options)


def _deliver_and_tidy(message: MessageLike, **options: Any) -> InboundMessage:
    with unit_of_work():
        return deliver(message, **options)


@contextmanager
def captured_tasks() -> Iterator[list[tuple[str, list[int]]]]:
    """Record the Celery-task mailbox handlers processing would send, instead of sending
    them (no broker needed): a list of ``(task name, [message pk, mailbox pk])``."""
    with schedule.recording() as recorder:
        yield recorder.tasks


@dataclass(frozen=True)
class CapturedMessage:
    """One ``message_received`` sending: the message and the signal's keyword arguments."""

    message: InboundMessage
    kwargs: dict[str, Any]


@contextmanager
def captured_messages() -> Iterator[list[CapturedMessage]]:
    """Record every ``message_received`` sent during the block, in order."""
    captured: list[CapturedMessage] = []

    def record(sender: Any, message: InboundMessage, **kwargs: Any) -> None:
        captured.append(CapturedMessage(message=message, kwargs=kwargs))

    message_received.connect(record, weak=False)
    try:
        yield captured
    finally:
        message_received.disconnect(record)


@dataclass(frozen=True)
class RunningServer:
    """Where a test server listens."""

    host: str
    port: int
    hostname: str
    #: Port of the implicit-TLS listener, when ``TLS_BIND`` is set.
    tls_port: int | None = None
    #: Port of the authenticated submission listener, when ``SUBMISSION_BIND`` is set.
    submission_port: int | None = None


class ServerThread:
    """The inbound SMTP server on its own event loop in a background thread.

    ``start()`` binds port 0 on ``host`` and returns where it listens; ``stop()`` stops it
    the way ``smtpd`` does on SIGTERM (idle sessions get ``421``, commits finish,
    processing in flight is waited for) and returns when all of that is done.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        hostname: str = "mx.test",
        lmtp: bool = False,
        lmtp_socket: str | None = None,
    ) -> None:
        self.host = host
        self.server = InboundServer(hostname=hostname, lmtp=lmtp, lmtp_socket=lmtp_socket)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="inbound-smtp-test", daemon=True)
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._address: RunningServer | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            host, port = self._loop.run_until_complete(self.server.start(self.host, 0))
            tls = self.server.tls_address
            self._address = RunningServer(
                host=host,
                port=port,
                hostname=self.server.hostname,
                tls_port=None if tls is None else tls[1],
                submission_port=(
                    None
                    if self.server.submission_address is None
                    else self.server.submission_address[1]
                ),
            )
        except BaseException as error:
            self._failure = error
            return
        finally:
            self._ready.set()
        self._loop.run_forever()

    def start(self) -> RunningServer:
        """Start serving; raise what binding raised, if it failed."""
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            self._loop.close()
            raise self._failure
        assert self._address is not None
        return self._address

    def stop(self, *, grace: float = 5.0) -> None:
        """Stop serving and wait for the server's work in flight (at most ~3x ``grace``)."""
        future = asyncio.run_coroutine_threadsafe(self.server.stop(grace=grace), self._loop)
        try:
            future.result(timeout=grace * 3 + 5)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(grace * 3 + 5)
            if not self._thread.is_alive():
                self._loop.close()


@contextmanager
def running_server(
    *,
    host: str = "127.0.0.1",
    hostname: str = "mx.test",
    grace: float = 5.0,
    lmtp: bool = False,
    lmtp_socket: str | None = None,
) -> Iterator[RunningServer]:
    """Run the inbound SMTP server on ``host`` port 0 for the duration of the block.

    ``lmtp=True`` makes it speak LMTP (``smtpd --lmtp``); ``lmtp_socket`` adds an LMTP
    listener on that UNIX socket path (``smtpd --lmtp-socket``).

    On exit the server stops the way ``smtpd`` does on SIGTERM: commits and message
    processing in flight finish (within ``grace`` seconds) before the block returns,
    so assertions after the block see every side effect.
    """
    thread = ServerThread(host=host, hostname=hostname, lmtp=lmtp, lmtp_socket=lmtp_socket)
    address = thread.start()
    try:
        yield address
    finally:
        thread.stop(grace=grace)


try:
    import pytest
except ImportError:  # pragma: no cover - pytest is optional for users
    pass
else:

    @pytest.fixture
    def inbound_smtp_server(transactional_db: None) -> Iterator[RunningServer]:
        """The real listener on ``127.0.0.1:<ephemeral>`` for one test (pytest-django)."""
        with running_server() as server:
            yield server

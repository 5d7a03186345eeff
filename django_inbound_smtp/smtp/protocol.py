"""Our aiosmtpd ``SMTP`` protocol subclass: a DATA reader we control, enhanced status
codes on aiosmtpd's own replies, and a per-transaction envelope with resolved recipients.

Everything else (command parsing, ordering checks, EHLO, STARTTLS) stays aiosmtpd's,
and policy stays in the handler's hooks.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from datetime import UTC, datetime
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, syntax

from django_inbound_smtp import metrics, replies
from django_inbound_smtp.conf import get_settings
from django_inbound_smtp.envelope import ResolvedRecipient
from django_inbound_smtp.logging import set_queue_id, set_session
from django_inbound_smtp.replies import Reply
from django_inbound_smtp.smtp._compat import CommandSizeLimits, enhance
from django_inbound_smtp.smtp._intake import DrainExceeded, Intake, discard_spool
from django_inbound_smtp.smtp.auth import AuthMechanisms
from django_inbound_smtp.smtp.limits import AuthThrottle, SessionLimiter, client_key
from django_inbound_smtp.spool import Spool

__all__ = ["DATA_CHUNK_SIZE", "InboundEnvelope", "InboundSMTP"]

logger = logging.getLogger(__name__)

# Read DATA in large chunks instead of aiosmtpd's line-by-line readuntil().
DATA_CHUNK_SIZE = 64 * 1024


class InboundEnvelope(Envelope):
    """aiosmtpd's envelope plus the recipients our validators resolved."""

    def __init__(self) -> None:
        super().__init__()
        self.resolved: list[ResolvedRecipient] = []
        # For each successful RCPT, in order, its index in ``resolved`` (a repeated
        # address is one recipient but two RCPTs: LMTP answers each after DATA).
        self.rcpt_order: list[int] = []
        self.bare_newlines = False
        self.spool: Spool | None = None  # the received message, set at end of data
        self.queue_id = ""  # ours, chosen when MAIL is accepted (RCPT log lines carry it)
        self.received_at = datetime.now(UTC)  # reset when DATA starts


class InboundSMTP(AuthMechanisms, SMTP):
    """aiosmtpd's protocol with our DATA reader and enhanced status codes.

    ``phase`` tells a stopping server what the session is doing: ``None`` (between
    commands: safe to close), ``"transfer"`` (receiving DATA: may finish within the
    grace period) or ``"commit"`` (storing: never interrupted).
    """

    phase: str | None = None
    #: True on the LMTP listener (``smtp.lmtp.InboundLMTP``).
    lmtp = False

    def __init__(
        self,
        handler: Any,
        *,
        limiter: SessionLimiter | None = None,
        data_timeout: float | None = None,
        auth_throttle: AuthThrottle | None = None,
        command_line_limit: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__(handler, **options)
        if command_line_limit is not None:
            self.command_size_limit = command_line_limit
        self.command_size_limits = CommandSizeLimits(self.command_size_limit)
        self._auth_throttle = auth_throttle
        self._auth_failures = 0
        self._rcpt_errors = 0
        self._seen_data = False
        self._rcpt_overshoot = 0
        self._limiter = limiter
        self._data_timeout = data_timeout
        self._client: str | None = None
        self._refusal: Reply | None = None
        self._metered = False  # counted in the session metrics (once, STARTTLS or not)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None  # not the STARTTLS re-entry
        super().connection_made(transport)
        if first and not self._metered:
            self._metered = True
            metrics.session_started()
        ssl_object = transport.get_extra_info("ssl_object")
        if first and ssl_object is not None and self.session is not None:
            # Implicit TLS (RFC 8314): aiosmtpd records TLS only after STARTTLS.
            self.session.ssl = {"ssl_object": ssl_object}
        if first and self._limiter is not None:
            peer = transport.get_extra_info("peername")
            client = client_key(str(peer[0])) if isinstance(peer, tuple) else "local"
            # Behind a PROXY-protocol balancer the per-client cap waits for the header.
            behind_proxy = self._proxy_timeout is not None
            self._refusal = self._limiter.admit(client, check_client=not behind_proxy)
            if self._refusal is None:
                self._client = client

    def rebind_client(self, client: str) -> Reply | None:
        """The PROXY header named the real ``client``: count the session as its."""
        if self._limiter is None or self._client is None:
            return None
        client = client_key(client)
        refusal = self._limiter.rebind(self._client, client)
        if refusal is None:
            self._client = client
        return refusal

    def data_received(self, data: bytes) -> None:
        if not self._seen_data:
            self._seen_data = True
            if data[:2] == b"\x16\x03" and self._tls_protocol is None:
                # A TLS ClientHello on the plain port (a client expecting implicit TLS):
                # it holds no line end, so the command reader would wait for one until
                # the idle timeout (hostile-inputs #23). Say so and hang up.
                if isinstance(self.transport, asyncio.WriteTransport):
                    self.transport.write(f"{replies.TLS_ON_PLAIN_PORT}\r\n".encode("ascii"))
                    metrics.reply_sent(str(replies.TLS_ON_PLAIN_PORT))
                self._close()
                return
        super().data_received(data)

    def connection_lost(self, error: Exception | None) -> None:
        if self._limiter is not None and self._client is not None:
            self._limiter.release(self._client)
            self._client = None
        if self._metered:
            self._metered = False
            metrics.session_ended()
        super().connection_lost(error)

    async def _handle_client(self) -> None:
        # This task's context: every log line of the session (the database threads
        # copy it) carries the session id, and the queue id once MAIL chose one.
        set_session(secrets.token_hex(4))
        set_queue_id("")
        if self._refusal is not None:
            # Over a session cap: refuse instead of greeting (RFC 5321 §3.1 allows 421).
            await self.push(str(self._refusal.from_host(self.hostname)))
            self._close()
            return
        settings = get_settings()
        if settings.GREETING_DELAY > 0:
            await asyncio.sleep(settings.GREETING_DELAY)
        if settings.EARLY_TALKERS == "reject" and self._seen_data:
            # Talked before our greeting: a bot, not an SMTP client (postscreen's test).
            await self.push(str(replies.OUT_OF_SYNC))
            self._close()
            return
        try:
            await super()._handle_client()
        except ConnectionResetError:
            # The client went away (mid-DATA: nothing is stored). aiosmtpd closes the
            # writer and re-raises, but nobody awaits this task: without this, asyncio
            # would log "Task exception was never retrieved" with a traceback.
            logger.info("%r connection reset by the client", self.session and self.session.peer)

    def count_rcpt_overshoot(self) -> bool:
        """Count an RCPT past the recipient cap; ``True`` once there were as many extra
        as the cap itself (hostile-inputs #53: 452 for each, then 421 and close)."""
        self._rcpt_overshoot += 1
        return self._rcpt_overshoot > get_settings().MAX_RECIPIENTS

    def count_rcpt_error(self) -> bool:
        """Count a refused RCPT; ``True`` once the session has had ``RCPT_ERROR_LIMIT``."""
        self._rcpt_errors += 1
        return self._rcpt_errors >= get_settings().RCPT_ERROR_LIMIT

    def close_session(self) -> None:
        """Close the connection (after what has been written is sent)."""
        self._close()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _timeout_cb(self) -> None:
        # aiosmtpd closes silently; RFC 5321 §4.5.3.2 and every MTA say 421 first.
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
            line = str(replies.TIMEOUT.from_host(self.hostname)) + "\r\n"
            transport.write(line.encode("ascii"))
            metrics.reply_sent(line)
        super()._timeout_cb()

    async def _not_smtp(self, arg: str | None) -> None:
        # An HTTP request (scanner, proxy probe, misdirected browser): close at once
        # instead of answering each header line (hostile-inputs #59).
        await self.push(str(replies.NOT_SMTP))
        self._close()

    smtp_GET = smtp_POST = smtp_HEAD = smtp_PUT = smtp_CONNECT = smtp_OPTIONS = _not_smtp

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str | None) -> None:
        if not self._auth_methods:
            await self.push(str(replies.AUTH_NOT_OFFERED))  # an MX (hostile-inputs #21)
            return
        settings = get_settings()
        if self._auth_throttle is not None and self._client is not None:
            if self._auth_throttle.blocked(
                self._client,
                limit=settings.AUTH_FAILURES_PER_CLIENT,
                window=settings.AUTH_FAILURE_WINDOW,
            ):
                await self.push(str(replies.AUTH_THROTTLED))
                return
        await super().smtp_AUTH(arg)

    # Not named auth_*: aiosmtpd takes every auth_* member for a SASL mechanism.
    def count_auth_failure(self) -> None:
        """Count a failed AUTH; past ``AUTH_MAX_FAILURES`` in this session, hang up."""
        self._auth_failures += 1
        if self._auth_throttle is not None and self._client is not None:
            self._auth_throttle.failed(self._client)
        if self._auth_failures >= get_settings().AUTH_MAX_FAILURES:
            transport = self.transport
            if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
                reply = replies.TOO_MANY_AUTH_FAILURES.from_host(self.hostname)
                transport.write(f"{reply}\r\n".encode("ascii"))
                metrics.reply_sent(str(reply))
            self._close()

    def _pipelined_too_early(self) -> bool:
        # Bytes already waiting behind HELO/EHLO: the client did not wait for the reply
        # that tells it whether PIPELINING is allowed (RFC 2920 §3.1).
        return get_settings().EARLY_TALKERS == "reject" and bool(
            self._reader._buffer  # type: ignore[attr-defined]
        )

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str | None) -> None:
        if self._pipelined_too_early():
            await self.push(str(replies.OUT_OF_SYNC))
            self._close()
            return
        await super().smtp_EHLO(hostname)

    @syntax("HELO hostname")
    async def smtp_HELO(self, hostname: str | None) -> None:
        if self._pipelined_too_early():
            await self.push(str(replies.OUT_OF_SYNC))
            self._close()
            return
        await super().smtp_HELO(hostname)

    @syntax("STARTTLS")
    async def smtp_STARTTLS(self, arg: str | None) -> None:
        # aiosmtpd would answer 220 again and nest a second handshake, which kills the
        # session (hostile-inputs #18); RFC 3207 §4.2 forbids it anyway.
        if self.session is not None and self.session.ssl is not None:
            await self.push("554 5.5.1 Error: TLS already active")
            return
        await super().smtp_STARTTLS(arg)

    def _create_envelope(self) -> InboundEnvelope:
        return InboundEnvelope()

    def _set_rset_state(self) -> None:
        super()._set_rset_state()
        set_queue_id("")  # RSET, a new EHLO: the transaction (and its queue id) is gone

    def _set_post_data_state(self) -> None:
        super()._set_post_data_state()
        set_queue_id("")

    async def push(self, status: str | bytes) -> None:
        # Every reply of a session passes here (greeting, 354, 334 included): one
        # counter increment, labelled by its code.
        metrics.reply_sent(status)
        if isinstance(status, str):
            # Enhanced codes on aiosmtpd's replies; never a client's CR, NUL or other
            # control byte echoed back inside a reply line.
            await super().push(enhance(status))
        else:
            await super().push(status)

    async def handle_exception(self, error: Exception) -> str:
        # Backstop for anything that escaped a hook: never 500 with exception text
        # (aiosmtpd's default), and reset the transaction so the next MAIL works.
        self._set_rset_state()
        return str(await super().handle_exception(error))

    def _unread(self, data: bytes) -> None:
        # Hand pipelined bytes that followed ".CRLF" back to the command reader.
        # StreamReader has no public unread; aiosmtpd itself manages _buffer directly
        # (its STARTTLS fix clears it).
        if data:
            self._reader._buffer[:0] = data  # type: ignore[attr-defined]

    async def _next_chunk(self, deadline: float | None) -> bytes:
        if deadline is None:
            return await self._reader.read(DATA_CHUNK_SIZE)
        # Bounded wait: a client that stops sending mid-DATA is cut at the deadline,
        # not only at the next idle timeout.
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise _DeadlineExceeded
        try:
            return await asyncio.wait_for(self._reader.read(DATA_CHUNK_SIZE), remaining)
        except TimeoutError:
            raise _DeadlineExceeded from None

    async def _read_data(self, intake: Intake) -> None:
        """Read DATA to its end into ``intake``."""
        loop = asyncio.get_running_loop()
        deadline = None if self._data_timeout is None else loop.time() + self._data_timeout
        while not intake.done:
            chunk = await self._next_chunk(deadline)
            if not chunk:
                raise ConnectionResetError("connection closed during DATA")
            # Progress, not a per-command deadline: a slow but steady legitimate link is
            # not cut off mid-message (hostile-inputs #64).
            self._reset_timeout()
            await intake.feed(chunk)
        self._unread(intake.trailing)
        if isinstance(self.envelope, InboundEnvelope):
            self.envelope.bare_newlines = intake.bare_newlines_seen

    @syntax("DATA")
    async def smtp_DATA(self, arg: str | None) -> None:
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        envelope = self.envelope
        # Set by connection_made, reset after every DATA, always by _create_envelope.
        assert isinstance(envelope, InboundEnvelope)
        if not envelope.rcpt_tos:
            await self.push(str(replies.NEED_RCPT))
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        self.phase = "transfer"
        try:
            await self._receive_and_store(envelope)
        finally:
            self.phase = None

    async def _receive_and_store(self, envelope: InboundEnvelope) -> None:
        spool: Spool = self.event_handler.open_spool(self.session, envelope, lmtp=self.lmtp)
        try:
            await self._receive_into(envelope, spool)
        finally:
            # Refused, failed or cut off: the spool goes. Once a delivery has taken it,
            # that delivery discards it when done, even if this session is gone by then.
            if not spool.taken:
                await discard_spool(spool)

    async def _receive_into(self, envelope: InboundEnvelope, spool: Spool) -> None:
        settings = get_settings()
        intake = Intake(
            spool,
            size_limit=self.data_size_limit,
            bare_newlines=settings.BARE_NEWLINES,
            line_limit=settings.DATA_LINE_LIMIT,
        )
        try:
            await self._read_data(intake)
        except _DeadlineExceeded:
            # RFC 5321 §4.5.3.2.6 gives a client 10 minutes for the whole DATA; a
            # trickle that never ends would otherwise hold the session for ever.
            await self._refuse_data(str(replies.DATA_TOO_SLOW.from_host(self.hostname)))
            self._set_post_data_state()
            self._close()
            return
        except DrainExceeded:
            await self._refuse_data(str(replies.TOO_MUCH_DATA))
            self._set_post_data_state()
            self._close()
            return
        refusal = await intake.finish(reference=envelope.queue_id)
        if refusal is not None:
            await self._refuse_data(refusal)
            self._set_post_data_state()
            return
        envelope.spool = spool
        self.phase = "commit"
        try:
            statuses = await self._end_of_data(envelope)
        finally:
            # Always start the next transaction clean, whatever the hook did.
            self._set_post_data_state()
        for status in statuses:
            await self.push(status)

    async def _refuse_data(self, reply: str) -> None:
        """Answer a DATA whose message is not kept (LMTP overrides: once per recipient)."""
        await self.push(reply)

    async def _end_of_data(self, envelope: InboundEnvelope) -> list[str]:
        """The replies to a received message: SMTP's one (LMTP overrides: one each)."""
        status: Any = await self._call_handler_hook("DATA")
        return [str(status)]


class _DeadlineExceeded(Exception):
    """The DATA transfer took longer than ``DATA_TIMEOUT``."""

"""The aiosmtpd handler: policy hooks for MAIL, RCPT and DATA.

Every hook catches its own failures and answers ``451 4.3.0`` with a generic text and
a reference; the traceback goes to the log only, never to the client (STYLE §4,
hostile-inputs #87-#92). Database work happens only through ``_bridge``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from functools import partial
from typing import Any

from aiosmtpd.proxy_protocol import V2_CMD

from django_inbound_smtp import metrics, replies
from django_inbound_smtp.conf import get_settings
from django_inbound_smtp.envelope import (
    ReceivedEnvelope,
    RecipientContext,
    address_key,
    address_syntax_error,
    helo_syntax_error,
)
from django_inbound_smtp.exceptions import Rejected, TemporaryFailure
from django_inbound_smtp.logging import set_queue_id
from django_inbound_smtp.parsing import MAX_HEADER_BLOCK
from django_inbound_smtp.smtp import _bridge, _session, sender_checks
from django_inbound_smtp.smtp._diskspace import FreeSpace, declared_size
from django_inbound_smtp.smtp._intake import discard_spool, run_to_the_end
from django_inbound_smtp.smtp._trace import new_queue_id, received_header, sanitize_helo
from django_inbound_smtp.smtp.protocol import InboundEnvelope, InboundSMTP
from django_inbound_smtp.spool import Spool, is_disk_full

__all__ = ["InboundHandler"]

logger = logging.getLogger(__name__)


async def _store(
    committer: _bridge.GroupCommitter, received: ReceivedEnvelope, spool: Spool
) -> int:
    try:
        return await committer.deliver(received, spool)
    finally:
        await discard_spool(spool)


class InboundHandler:
    """Hooks called by :class:`~django_inbound_smtp.smtp.protocol.InboundSMTP`."""

    def __init__(self, *, hostname: str) -> None:
        self.hostname = hostname
        #: Where messages larger than SPOOL_MEMORY_LIMIT are spooled (set by the server).
        self.spool_directory: str | None = None
        #: Free space where messages land, checked at MAIL (folders set by the server).
        self.free_space = FreeSpace([])
        #: Set by a stopping server: no new transaction starts (RFC 5321 §3.8).
        self.draining = False
        self._deliveries: set[asyncio.Task[int]] = set()
        self._committer = _bridge.GroupCommitter()

    async def wait_for_deliveries(self, grace: float) -> bool:
        """Wait for commits in flight, new ones included (shutdown); ``True`` if none is left."""
        deadline = asyncio.get_running_loop().time() + grace
        while self._deliveries:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return False
            await asyncio.wait(set(self._deliveries), timeout=remaining)
        return True

    async def handle_PROXY(
        self, server: InboundSMTP, session: Any, envelope: Any, proxy_data: Any
    ) -> bool:
        """Accept a PROXY header only from a trusted balancer; adopt the client it names.

        Returning ``False`` makes aiosmtpd close the connection without a greeting.
        """
        proxy_peer = _session.peer_of(session)[0]
        if not _session.trusted_proxy(proxy_peer):
            logger.warning("PROXY header from untrusted %s refused", proxy_peer)
            return False
        if not proxy_data.valid:
            logger.warning("invalid PROXY header from %s: %s", proxy_peer, proxy_data.error)
            return False
        if proxy_data.command == V2_CMD.LOCAL or proxy_data.src_addr is None:
            return True  # the balancer's own health check: no client to adopt
        client = str(proxy_data.src_addr)
        refusal = server.rebind_client(client)
        if refusal is not None:
            await server.push(str(refusal.from_host(self.hostname)))
            return False
        # From here on the session is the real client's: Received line, storage,
        # validators and logs all see it, not the balancer.
        session.peer = (client, int(proxy_data.src_port or 0))
        return True

    async def verify_login(self, server: InboundSMTP, login: bytes, password: bytes) -> str | None:
        """Check AUTH credentials off the loop; on failure answer and count it.

        Returns the username, or ``None`` after having sent ``535 5.7.8`` (and, past
        ``AUTH_MAX_FAILURES`` in this session, ``421 4.7.0`` and a close).
        """
        try:
            username = await _bridge.authenticate(
                login.decode("utf-8", "strict"), password.decode("utf-8", "strict")
            )
        except UnicodeDecodeError:
            username = None
        except Exception:
            logger.exception("AUTH backend failed")
            await server.push(str(replies.TEMPORARY_AUTH_FAILURE))
            return None
        if username is not None:
            return username
        await server.push(str(replies.AUTH_INVALID))
        server.count_auth_failure()
        return None

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        if helo_syntax_error(hostname):
            return [str(replies.BAD_HELO)]  # host_name stays unset: MAIL needs a new EHLO
        session.host_name = hostname
        sender_checks.start(session, _session.checked_peer(server, session))
        # We send RFC 3463 codes on every reply, so say so (RFC 2034); pipelined commands
        # are answered in order (RFC 2920; our DATA reader hands back what follows the
        # end of data). An MX offers no AUTH: drop aiosmtpd's AUTH line when it lists no
        # mechanism (it shows it anyway).
        kept = [
            line
            for line in responses
            if not (line[4:].startswith("AUTH") and line[8:].strip() == "")
        ]
        kept[-1:-1] = ["250-PIPELINING", "250-ENHANCEDSTATUSCODES"]
        return kept

    async def handle_HELO(self, server: Any, session: Any, envelope: Any, hostname: str) -> str:
        if helo_syntax_error(hostname):
            return str(replies.BAD_HELO)
        session.host_name = hostname
        sender_checks.start(session, _session.checked_peer(server, session))
        return f"250 {self.hostname}"

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: InboundEnvelope, address: str, options: list[str]
    ) -> str:
        if self.draining:
            return self.shutting_down()
        try:
            smtputf8 = "SMTPUTF8" in (option.upper() for option in options)
            if encoding_reply := _session.utf8_reply(address, smtputf8=smtputf8):
                return encoding_reply
            if address != _session.NULL_SENDER and address_syntax_error(address):
                return str(replies.BAD_SENDER_SYNTAX)
            if not await self.free_space.enough_for(
                declared_size(options), reserve=get_settings().MIN_FREE_SPACE
            ):
                # RFC 5321 §4.5.3.1.10 / RFC 1870: temporary, the client retries later.
                logger.warning("refusing MAIL: free disk space is below MIN_FREE_SPACE")
                return str(replies.INSUFFICIENT_STORAGE)
            refusal = await sender_checks.at_mail(
                session,
                envelope,
                mail_from="" if address == _session.NULL_SENDER else address,
                helo=sanitize_helo(session.host_name or ""),
                peer=_session.checked_peer(server, session),
            )
            if refusal is not None:
                return str(refusal)
            envelope.mail_from = address
            envelope.mail_options.extend(options)
            envelope.queue_id = new_queue_id()  # at MAIL: the RCPT log lines carry it
            set_queue_id(envelope.queue_id)
            return str(replies.SENDER_OK)
        except Exception:
            return self._failed("MAIL", replies.TEMPORARY_FAILURE)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: InboundEnvelope, address: str, options: list[str]
    ) -> str:
        reply = await self._rcpt_reply(session, envelope, address, options)
        over_cap = reply == str(replies.TOO_MANY_RECIPIENTS)
        if (reply.startswith("5") and server.count_rcpt_error()) or (
            over_cap and server.count_rcpt_overshoot()
        ):
            # Directory harvesting: stop answering "unknown user" questions.
            asyncio.get_running_loop().call_soon(server.close_session)
            return str(replies.TOO_MANY_ERRORS.from_host(self.hostname))
        return reply

    async def _rcpt_reply(
        self, session: Any, envelope: InboundEnvelope, address: str, options: list[str]
    ) -> str:
        try:
            if encoding_reply := _session.utf8_reply(address, smtputf8=bool(envelope.smtp_utf8)):
                return encoding_reply
            if address_syntax_error(address) and address.lower() != "postmaster":
                return str(replies.BAD_RECIPIENT_SYNTAX)
            key = address_key(address)
            for index, known in enumerate(envelope.resolved):
                if address_key(known.address) == key:
                    envelope.rcpt_order.append(index)  # LMTP answers it again after DATA
                    return str(replies.RECIPIENT_OK)  # a repeated RCPT is one recipient
            if len(envelope.resolved) >= get_settings().MAX_RECIPIENTS:
                return str(replies.TOO_MANY_RECIPIENTS)
            context = RecipientContext(
                mail_from=_session.sender_of(envelope),
                peer_host=_session.peer_of(session)[0],
                helo=sanitize_helo(session.host_name or ""),
                tls=session.ssl is not None,
            )
            try:
                resolved = await _bridge.validate_recipient(address, context)
            except (Rejected, TemporaryFailure) as refusal:
                return str(refusal.reply.about(address))
            if not _bridge.may_skip_quota(resolved):
                if (full := await _bridge.quota_refusal(resolved)) is not None:
                    return str(full)
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(options)
            envelope.resolved.append(resolved)
            envelope.rcpt_order.append(len(envelope.resolved) - 1)
            return str(replies.RECIPIENT_OK)
        except Exception:
            return self._failed("RCPT", replies.LOOKUP_FAILURE.about(address))

    def open_spool(self, session: Any, envelope: InboundEnvelope, *, lmtp: bool = False) -> Spool:
        """The spool one message is received into, starting with our ``Received:`` line.

        Called by the protocol when DATA starts; the time of receipt is chosen here
        (the queue id at MAIL)."""
        envelope.queue_id = envelope.queue_id or new_queue_id()
        envelope.received_at = datetime.now(UTC)
        peer_host, _ = _session.peer_of(session)
        tls, tls_version, tls_cipher = _session.tls_of(session)
        helo = sanitize_helo(session.host_name or "")
        trace = received_header(
            helo=helo,
            peer_host=peer_host,
            hostname=self.hostname,
            queue_id=envelope.queue_id,
            recipients=tuple(r.address for r in envelope.resolved),
            esmtp=bool(session.extended_smtp),
            tls=tls,
            authenticated=bool(session.authenticated),
            when=envelope.received_at,
            tls_version=tls_version,
            tls_cipher=tls_cipher,
            lmtp=lmtp,
        )
        settings = get_settings()
        return Spool(
            self.spool_directory,
            memory_limit=settings.SPOOL_MEMORY_LIMIT,
            head_limit=MAX_HEADER_BLOCK,
            prefix=trace,
        )

    async def handle_DATA(self, server: Any, session: Any, envelope: InboundEnvelope) -> str:
        queue_id = envelope.queue_id
        spool = envelope.spool
        dot = time.monotonic()
        try:
            assert spool is not None  # the protocol sets it before calling this hook
            checks, refusal = await self._check_data(envelope, spool, session=session)
            if refusal is not None:
                return str(refusal)
            recipients = tuple(envelope.resolved)
            received = _session.received_envelope(session, envelope, recipients, checks)
            pk = await self._deliver(received, spool)
        except Exception as error:
            full = is_disk_full(error)
            reply = replies.INSUFFICIENT_STORAGE if full else replies.TEMPORARY_FAILURE
            return self._failed("DATA", reply, reference=queue_id)
        metrics.message_stored(len(spool.prefix) + spool.size, time.monotonic() - dot)
        _session.log_accepted(received, pk, spool.size)
        return str(replies.queued(queue_id))

    async def handle_LMTP_DATA(
        self, server: Any, session: Any, envelope: InboundEnvelope
    ) -> list[str]:
        """LMTP's end of data (RFC 2033 §4.2): one reply per successful RCPT, in RCPT
        order. Each recipient's mailbox is checked again (deleted, disabled, full); the
        message is stored once, for the recipients that may have it, and each of them
        gets ``250`` once it is durable. A fault of ours is a 4xx for every recipient."""
        queue_id = envelope.queue_id
        spool = envelope.spool
        everyone = tuple(envelope.resolved)
        dot = time.monotonic()
        try:
            assert spool is not None  # the protocol sets it before calling this hook
            size = len(spool.prefix) + spool.size
            verdicts = await _bridge.refusals_at_data(everyone, size=size)
            kept = tuple(r for r, v in zip(everyone, verdicts, strict=True) if v is None)
            if kept:
                received = _session.received_envelope(
                    session, envelope, kept, None, received_via="lmtp"
                )
                pk = await self._deliver(received, spool)
                metrics.message_stored(size, time.monotonic() - dot)
                _session.log_accepted(received, pk, spool.size)
        except Exception as error:
            full = is_disk_full(error)
            reply = replies.INSUFFICIENT_STORAGE if full else replies.TEMPORARY_FAILURE
            failed = self._failed("DATA", reply, reference=queue_id)
            return [failed] * len(envelope.rcpt_order)
        for verdict in verdicts:
            if verdict is not None:
                logger.info("%s: recipient refused after DATA: %s", queue_id, verdict.code)
        queued = str(replies.queued(queue_id))
        answers = [queued if verdict is None else str(verdict) for verdict in verdicts]
        # One reply per successful RCPT (RFC 2033 §4.2), a repeated one included.
        return [answers[index] for index in envelope.rcpt_order]

    async def _check_data(
        self, envelope: InboundEnvelope, spool: Spool, *, session: Any
    ) -> tuple[dict[str, Any] | None, replies.Reply | None]:
        """The DATA-phase sender checks; our Authentication-Results goes on top of the
        stored message and a forged one is renamed (RFC 8601 §5)."""
        rewrite, header, record, refusal = await sender_checks.at_data(
            envelope,
            spool,
            authserv_id=get_settings().AUTHSERV_ID or self.hostname,
            mail_from=_session.sender_of(envelope),
            helo=sanitize_helo(session.host_name or ""),
            peer=_session.peer_of(session)[0] or "",
        )
        if refusal is None and (header or rewrite):
            head_length, head = rewrite or (0, b"")
            step = partial(
                spool.rewrite, prefix=header + spool.prefix, head_length=head_length, head=head
            )
            if spool.on_disk:
                await run_to_the_end(step)  # copies the spool file once
            else:
                step()
        return record, refusal

    async def _deliver(self, received: ReceivedEnvelope, spool: Spool) -> int:
        # Shielded: if the client hangs up mid-commit, the commit still finishes (and is
        # awaited at shutdown) rather than being abandoned half-way. The task owns the
        # spool from here: the session must not discard it while it is being stored.
        spool.taken = True
        task = asyncio.ensure_future(_store(self._committer, received, spool))
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)
        return await asyncio.shield(task)

    def shutting_down(self) -> str:
        """``421 4.3.2 <host> Service shutting down…`` (RFC 5321 §3.8)."""
        return str(replies.SHUTTING_DOWN.from_host(self.hostname))

    async def handle_exception(self, error: Exception) -> str:
        logger.error("unexpected SMTP session error", exc_info=error)
        return str(replies.TEMPORARY_FAILURE)

    def _failed(self, hook: str, reply: replies.Reply, *, reference: str = "") -> str:
        # The traceback goes to the log under a reference the client also gets, so a
        # bounce or a support request finds it; the client never sees exception text.
        reference = reference or new_queue_id()
        logger.exception("%s hook failed (ref %s); answering %s", hook, reference, reply.code)
        return str(reply.with_reference(reference))

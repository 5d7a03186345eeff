"""The listener: builds one protocol per connection, serves, and stops cleanly.

``run_server`` is what ``manage.py smtpd`` runs in the main thread. Stopping closes
the listening socket first (new clients are refused and retry), waits for commits in
flight, answers ``421 4.3.2`` to every open connection, waits for processing in the
``smtpd`` process, then closes the ORM thread's database connections. aiosmtpd's
``Controller.stop()`` is never used: it cancels tasks mid-commit and sends no 421.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import ssl
import threading
import weakref
from collections.abc import Callable

from django_inbound_smtp import metrics
from django_inbound_smtp.conf import get_settings
from django_inbound_smtp.smtp import _bridge
from django_inbound_smtp.smtp._diskspace import FreeSpace
from django_inbound_smtp.smtp.handler import InboundHandler
from django_inbound_smtp.smtp.limits import AuthThrottle, SessionLimiter
from django_inbound_smtp.smtp.listeners import ListenerError, Listeners
from django_inbound_smtp.smtp.lmtp import (
    LMTP_GREETING_IDENT,
    InboundLMTP,
    listen_on_unix_socket,
    remove_unix_socket,
)
from django_inbound_smtp.smtp.protocol import InboundSMTP
from django_inbound_smtp.tls import CertificateStore

__all__ = ["InboundServer", "run_server", "split_bind"]

logger = logging.getLogger(__name__)

# The greeting names no software version (nothing for a scanner to match on).
GREETING_IDENT = "ESMTP"


def split_bind(value: str) -> tuple[str, int]:
    """A ``TLS_BIND`` / ``SUBMISSION_BIND`` value (``HOST:PORT``, ``[IPv6]:PORT``, or
    ``:PORT`` on 127.0.0.1) as ``(host, port)``."""
    host, _, port = value.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


class InboundServer:
    """One listening socket serving :class:`InboundSMTP` connections."""

    def __init__(
        self,
        *,
        hostname: str | None = None,
        tls_certfile: str | None = None,
        tls_keyfile: str | None = None,
        reuse_port: bool = False,
        tls_bind: str | None = None,
        submission_bind: str | None = None,
        listeners: Listeners | None = None,
        before_serving: Callable[[], object] | None = None,
        lmtp: bool = False,
        lmtp_socket: str | None = None,
    ) -> None:
        #: The main listener speaks LMTP (RFC 2033) instead of SMTP (``smtpd --lmtp``).
        self.lmtp = lmtp
        #: Path of a UNIX socket speaking LMTP (``smtpd --lmtp-socket``), if any.
        self.lmtp_socket = lmtp_socket
        self._lmtp_server: asyncio.Server | None = None
        # Sockets made before us (bound as root, or passed by systemd), by role; a role
        # without one is bound here. ``before_serving`` runs once every listener is
        # bound and the TLS key is loaded, before any database work or mail: where
        # ``smtpd --user`` drops root.
        self._listeners = listeners or Listeners()
        self._before_serving = before_serving
        # Set by ``smtpd --workers``: every worker binds the same ports (SO_REUSEPORT),
        # with the ports its parent picked for the listeners configured with port 0.
        self.reuse_port = reuse_port
        self._tls_bind = tls_bind
        self._submission_bind = submission_bind
        # Resolved once: aiosmtpd would otherwise call getfqdn() for every connection.
        self.hostname = hostname or get_settings().HOSTNAME or socket.getfqdn()
        self.tls = CertificateStore(certfile=tls_certfile, keyfile=tls_keyfile)
        #: Where the implicit-TLS listener listens, once started (``TLS_BIND``).
        self.tls_address: tuple[str, int] | None = None
        self._tls_server: asyncio.Server | None = None
        self.handler = InboundHandler(hostname=self.hostname)
        self._server: asyncio.Server | None = None
        self._connections: weakref.WeakSet[InboundSMTP] = weakref.WeakSet()
        self._sweeper: asyncio.Task[None] | None = None
        self._pruner: asyncio.Task[None] | None = None
        self._stop_pruning = threading.Event()
        self._limiter = SessionLimiter(total=1, per_client=1)  # set per connection
        self._auth_throttle = AuthThrottle()
        #: Where the authenticated submission listener listens (``SUBMISSION_BIND``).
        self.submission_address: tuple[str, int] | None = None
        self._submission_server: asyncio.Server | None = None

    def _make_protocol(
        self, *, implicit_tls: bool = False, submission: bool = False, lmtp: bool = False
    ) -> InboundSMTP:
        settings = get_settings()
        # Read per connection, so a changed setting applies to the next session.
        self._limiter.total = settings.MAX_SESSIONS
        self._limiter.per_client = settings.MAX_SESSIONS_PER_CLIENT
        # LMTP is for the MTA in front of us, on this host or a private network: no
        # STARTTLS and no AUTH there (RFC 2033 §6 leaves security to the setup).
        protocol = (InboundLMTP if lmtp else InboundSMTP)(
            self.handler,
            limiter=self._limiter,
            data_timeout=settings.DATA_TIMEOUT,
            proxy_protocol_timeout=(
                settings.PROXY_PROTOCOL_TIMEOUT if settings.PROXY_PROTOCOL_FROM else None
            ),
            command_call_limit=dict(settings.COMMAND_CALL_LIMITS),
            hostname=self.hostname,
            ident=LMTP_GREETING_IDENT if lmtp else GREETING_IDENT,
            # STARTTLS is offered on the plain listener when a certificate is configured.
            tls_context=None if implicit_tls or lmtp else self.tls.context(),
            require_starttls=(settings.TLS_REQUIRED or submission) and not (implicit_tls or lmtp),
            # AUTH only on the submission listener, only inside TLS (RFC 4954 §4),
            # required before MAIL there; an MX offers none (hostile-inputs #21).
            auth_required=submission,
            auth_require_tls=True,
            auth_exclude_mechanism=[] if submission else ["LOGIN", "PLAIN"],
            auth_throttle=self._auth_throttle,
            data_size_limit=settings.MAX_MESSAGE_SIZE,
            timeout=settings.COMMAND_TIMEOUT,
            # Kept as bytes end to end: stored byte-exact, decoded only for display.
            decode_data=False,
            # Internationalized addresses on purpose (RFC 6531): a non-ASCII address needs
            # the SMTPUTF8 parameter, bytes that are not UTF-8 are refused (handler).
            enable_SMTPUTF8=settings.SMTPUTF8,
            command_line_limit=settings.COMMAND_LINE_LIMIT,
            loop=asyncio.get_running_loop(),
        )
        self._connections.add(protocol)
        return protocol

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Bind and start accepting; return the bound ``(host, port)`` (port 0 resolved).

        In this order: every listener is bound (not yet accepting: the kernel queues
        new clients), the TLS key is read, ``before_serving`` runs, and only then are
        database threads opened and connections accepted."""
        try:
            bound = await self._bind_all(host, port)
            self.tls.context()  # read the key while we may (before privileges drop)
            if self._before_serving is not None:
                self._before_serving()
        except BaseException:
            self._close_listeners()
            raise
        _bridge.open_database_threads()
        try:
            folders = await _bridge.message_folders()
            self.handler.spool_directory = folders[0]
            self.handler.free_space = FreeSpace(folders)
            for listener in self._listening():
                await listener.start_serving()
        except BaseException:
            self._close_listeners()
            await _bridge.close_connections()  # this server will not stop: let go now
            raise
        interval = get_settings().SWEEP_INTERVAL
        if interval > 0:
            self._sweeper = asyncio.create_task(self._sweep_every(interval))
        prune_interval = get_settings().PRUNE_INTERVAL
        if prune_interval > 0 and _bridge.pruning_wanted():
            self._pruner = asyncio.create_task(self._prune_every(prune_interval))
        return bound

    async def _listen(
        self,
        factory: Callable[[], InboundSMTP],
        premade: list[socket.socket],
        host: str,
        port: int,
        *,
        tls: ssl.SSLContext | None = None,
    ) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        if len(premade) > 1:
            raise ListenerError(
                f"{len(premade)} sockets were passed for one listener; pass one "
                "(one ListenStream= per socket unit, or name them smtp, smtps, submission)."
            )
        if premade:
            return await loop.create_server(factory, sock=premade[0], ssl=tls, start_serving=False)
        return await loop.create_server(
            factory,
            host=host,
            port=port,
            ssl=tls,
            reuse_port=self.reuse_port,
            start_serving=False,
        )

    async def _bind_all(self, host: str, port: int) -> tuple[str, int]:
        # Socket activation: serve what systemd passed, bind nothing of our own on top.
        passed_only = self._listeners.activated
        if passed_only:
            logger.info("socket activation: serving the passed sockets only")
        if self._listeners.smtp or not passed_only:
            self._server = await self._listen(
                lambda: self._make_protocol(lmtp=self.lmtp), self._listeners.smtp, host, port
            )
        if self.lmtp_socket:
            # Bound here with the others (before privileges drop), serving with them.
            self._lmtp_server = await listen_on_unix_socket(
                lambda: self._make_protocol(lmtp=True), self.lmtp_socket
            )
        tls_bind = get_settings().TLS_BIND if self._tls_bind is None else self._tls_bind
        if (tls_bind and not passed_only) or self._listeners.smtps:
            if self.tls.context() is None:
                raise ListenerError(
                    "An implicit-TLS (smtps) listener needs a certificate: set "
                    "TLS_CERTFILE and TLS_KEYFILE (or --tls-cert and --tls-key)."
                )
            tls_host, tls_port = split_bind(tls_bind) if tls_bind else ("", 0)
            self._tls_server = await self._listen(
                lambda: self._make_protocol(implicit_tls=True),
                self._listeners.smtps,
                tls_host,
                tls_port,
                tls=self.tls.context(),
            )
            tls_bound = self._tls_server.sockets[0].getsockname()
            self.tls_address = (str(tls_bound[0]), int(tls_bound[1]))
        submission_bind = self._submission_bind
        if submission_bind is None:
            submission_bind = get_settings().SUBMISSION_BIND
        if (submission_bind and not passed_only) or self._listeners.submission:
            sub_host, sub_port = split_bind(submission_bind) if submission_bind else ("", 0)
            self._submission_server = await self._listen(
                lambda: self._make_protocol(submission=True),
                self._listeners.submission,
                sub_host,
                sub_port,
            )
            sub_bound = self._submission_server.sockets[0].getsockname()
            self.submission_address = (str(sub_bound[0]), int(sub_bound[1]))
        # The plain listener's address; under socket activation without one, the first
        # passed listener's (what the banner and the readiness report show).
        first = next(server for server in self._listening() if server is not self._lmtp_server)
        bound = first.sockets[0].getsockname()
        return str(bound[0]), int(bound[1])

    def _listening(self) -> list[asyncio.Server]:
        return [
            listener
            for listener in (
                self._server,
                self._tls_server,
                self._submission_server,
                self._lmtp_server,
            )
            if listener is not None
        ]

    def _close_listeners(self) -> None:
        for listener in self._listening():
            listener.close()
        self._listeners.close()
        self._remove_lmtp_socket()

    def _remove_lmtp_socket(self) -> None:
        if self._lmtp_server is not None and self.lmtp_socket:
            remove_unix_socket(self.lmtp_socket)

    async def _sweep_every(self, interval: float) -> None:
        # At-least-once processing: re-schedule messages whose task was lost, whose
        # worker died, or whose failure is due for a retry (lifecycle.schedule.sweep).
        # The first sweep runs at once: what a killed smtpd of this host left queued or
        # half-processed is taken over within seconds of the restart, not a lease later.
        while True:
            try:
                await _bridge.sweep()
            except Exception:
                logger.exception("sweep failed; trying again in %s s", interval)
            await asyncio.sleep(interval)

    async def _prune_every(self, interval: float) -> None:
        # Retention (store.retention): a task of its own, so a long prune never delays
        # the sweeper; its database work runs in a thread, in bounded batches. First
        # prune one interval after start-up: a restart loop never prunes in a burst.
        while True:
            await asyncio.sleep(interval)
            try:
                await _bridge.prune(self._stop_pruning)
            except Exception:
                logger.exception("prune failed; trying again in %s s", interval)

    def _goodbye(self, protocol: InboundSMTP) -> None:
        transport = protocol.transport
        if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
            with contextlib.suppress(Exception):
                transport.write(self.handler.shutting_down().encode("ascii") + b"\r\n")
                metrics.reply_sent(self.handler.shutting_down())
            transport.close()

    def _open(self) -> list[InboundSMTP]:
        return [
            p for p in self._connections if p.transport is not None and not p.transport.is_closing()
        ]

    async def stop(self, *, grace: float | None = None) -> None:
        """Stop as hostile-inputs §4.5 says: refuse new connections; say ``421 4.3.2`` to
        idle sessions at once; let transfers finish within ``grace``; never cut a commit
        (its client gets its ``250`` or ``451`` first); then close the rest, wait for
        processing, and close database connections."""
        grace = get_settings().SHUTDOWN_GRACE if grace is None else grace
        deadline = asyncio.get_running_loop().time() + grace
        for listener in self._listening():
            listener.close()
        self._stop_pruning.set()  # a prune in flight ends after its current batch
        if self._pruner is not None:
            self._pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pruner
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        self.handler.draining = True
        sessions = [p._handler_coroutine for p in self._connections if p._handler_coroutine]
        await self._close_idle_until(deadline)
        # Grace is over: transfers still running are cut (nothing of theirs is stored,
        # the client keeps the message); commits are awaited, then answered.
        for protocol in self._open():
            if protocol.phase == "transfer":
                self._goodbye(protocol)
        if not await self.handler.wait_for_deliveries(max(grace, 1.0)):
            logger.warning("commits still in flight after the grace period")
        await asyncio.sleep(0)  # let a finished commit write its reply
        self.abort()
        await self._unwind(sessions)
        for listener in self._listening():
            await listener.wait_closed()
        self._remove_lmtp_socket()
        if not await _bridge.drain_processing(grace):
            logger.warning("message processing still running after the grace period")
        await _bridge.close_connections()
        await self._cut_remaining()

    async def _cut_remaining(self) -> None:
        # Nothing may outlive the server: a transport closed gracefully may still be
        # waiting for its peer, one accepted as the listener closed may only now be
        # connected. Cut them and let the loop run their connection_lost.
        for _ in range(5):
            await asyncio.sleep(0)
            for protocol in list(self._connections):
                for transport in (protocol.transport, protocol._original_transport):
                    if isinstance(transport, asyncio.Transport) and not transport.is_closing():
                        transport.abort()

    async def _unwind(self, sessions: list[asyncio.Task[None]]) -> None:
        # Closing a transport cancels its session task (aiosmtpd keeps it in
        # _handler_coroutine); let those unwind here, not be destroyed pending.
        if not sessions:
            return
        _done, stuck = await asyncio.wait(sessions, timeout=1)
        if stuck:
            # A TLS close waits for the peer's close_notify, which a vanished client
            # never sends: cut the socket under it.
            for protocol in list(self._connections):
                raw = protocol._original_transport or protocol.transport
                if isinstance(raw, asyncio.Transport) and not raw.is_closing():
                    raw.abort()
            await asyncio.wait(stuck, timeout=1)

    async def _close_idle_until(self, deadline: float) -> None:
        # Sessions between commands are told 421 at once; busy ones as soon as their
        # transaction ends (the handler refuses a new MAIL while draining).
        loop = asyncio.get_running_loop()
        while True:
            for protocol in self._open():
                if protocol.phase is None:
                    self._goodbye(protocol)
            if not self._open() or loop.time() >= deadline:
                return
            await asyncio.sleep(0.05)

    def abort(self) -> None:
        """Say ``421 4.3.2`` to every open session and close it, now."""
        for listener in self._listening():
            listener.close()
        self._remove_lmtp_socket()
        self.handler.draining = True
        for protocol in self._open():
            self._goodbye(protocol)


def _reload_tls(server: InboundServer) -> None:
    try:
        server.tls.reload()
    except (OSError, ValueError) as error:  # ssl.SSLError is an OSError
        # Keep serving with the certificate already loaded; say why the new one failed.
        logger.error("SIGHUP: TLS certificate not reloaded: %s", error)
    else:
        logger.info("SIGHUP: TLS certificate reloaded")


async def run_server(
    host: str,
    port: int,
    *,
    hostname: str | None = None,
    tls_certfile: str | None = None,
    tls_keyfile: str | None = None,
    on_ready: Callable[[InboundServer, str, int], None] | None = None,
    reuse_port: bool = False,
    tls_bind: str | None = None,
    submission_bind: str | None = None,
    listeners: Listeners | None = None,
    before_serving: Callable[[], object] | None = None,
    lmtp: bool = False,
    lmtp_socket: str | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM, then stop cleanly. A second signal skips the grace;
    SIGHUP re-reads the TLS certificate and key. ``reuse_port``, ``tls_bind`` and
    ``submission_bind`` are for ``smtpd --workers``; ``listeners`` and
    ``before_serving`` for sockets made before us and privileges dropped after binding;
    ``lmtp`` and ``lmtp_socket`` for LMTP (see :class:`InboundServer`)."""
    server = InboundServer(
        hostname=hostname,
        tls_certfile=tls_certfile,
        tls_keyfile=tls_keyfile,
        reuse_port=reuse_port,
        tls_bind=tls_bind,
        submission_bind=submission_bind,
        listeners=listeners,
        before_serving=before_serving,
        lmtp=lmtp,
        lmtp_socket=lmtp_socket,
    )
    bound_host, bound_port = await server.start(host, port)
    stop = asyncio.Event()
    signals_seen = 0

    def _on_signal() -> None:
        nonlocal signals_seen
        signals_seen += 1
        stop.set()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Signal handlers can only be installed from the main thread; embedded use in
        # another thread stops through the returned task's cancellation instead.
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            loop.add_signal_handler(signum, _on_signal)
    with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
        loop.add_signal_handler(signal.SIGHUP, _reload_tls, server)
    if on_ready is not None:
        on_ready(server, bound_host, bound_port)
    try:
        await stop.wait()
    finally:
        logger.info("stopping: no new connections; finishing work in flight")
        stopping = asyncio.ensure_future(server.stop())
        while not stopping.done():
            await asyncio.wait({stopping}, timeout=0.1)
            if signals_seen > 1:
                logger.warning("second signal: closing every session now")
                stopping.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await stopping
                server.abort()
                break

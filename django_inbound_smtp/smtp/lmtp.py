"""LMTP (RFC 2033): the same listener speaking to an MTA in front of us (Postfix's
``lmtp:`` transport), with one reply per recipient after DATA.

What differs from SMTP, and nothing else: the client greets with ``LHLO`` (``HELO`` and
``EHLO`` are refused, §4.1); after the end of data the server answers once for every
recipient it accepted, in ``RCPT`` order (§4.2), so a fault of one mailbox (disabled,
full) refuses that recipient alone and the MTA retries only it. A message that is not
kept at all (too big, cut off, our fault) gets the same reply once per recipient, so
the client never waits for replies that will not come. PIPELINING and
ENHANCEDSTATUSCODES, which LMTP requires (§5), are offered as on the SMTP listener.
Sender checks do not run: the client is the MTA, which did its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable

from aiosmtpd.smtp import syntax

from django_inbound_smtp import replies
from django_inbound_smtp.smtp.protocol import InboundEnvelope, InboundSMTP

__all__ = [
    "LMTP_GREETING_IDENT",
    "LMTP_SOCKET_MODE",
    "InboundLMTP",
    "listen_on_unix_socket",
    "remove_unix_socket",
]

#: After our host name in the ``220`` greeting.
LMTP_GREETING_IDENT = "LMTP"
#: Mode of the LMTP UNIX socket: any local user may connect, as to a port on 127.0.0.1
#: (the MTA's LMTP client runs as its own user); a folder around it can restrict that.
LMTP_SOCKET_MODE = 0o666


async def listen_on_unix_socket(
    factory: Callable[[], asyncio.Protocol], path: str
) -> asyncio.Server:
    """A listener on the UNIX socket ``path`` (a stale socket file there is replaced),
    bound but not yet serving."""
    server = await asyncio.get_running_loop().create_unix_server(
        factory, path=path, start_serving=False
    )
    os.chmod(path, LMTP_SOCKET_MODE)
    return server


def remove_unix_socket(path: str) -> None:
    """Remove the socket file: Python before 3.13 leaves it behind when the server closes.
    A process that dropped root may not be allowed to; then it stays, and the next start
    replaces it."""
    with contextlib.suppress(FileNotFoundError, PermissionError):
        os.unlink(path)


class InboundLMTP(InboundSMTP):
    """:class:`InboundSMTP` speaking LMTP."""

    lmtp = True

    @syntax("LHLO hostname")
    async def smtp_LHLO(self, hostname: str | None) -> None:
        # EHLO's reply and checks (RFC 2033 §4.1: LHLO is EHLO renamed).
        await super().smtp_EHLO(hostname)

    async def smtp_EHLO(self, hostname: str | None) -> None:
        await self.push(str(replies.NOT_LMTP_GREETING))

    async def smtp_HELO(self, hostname: str | None) -> None:
        await self.push(str(replies.NOT_LMTP_GREETING))

    async def check_helo_needed(self, helo: str = "HELO") -> bool:
        if self.session is not None and not self.session.host_name:
            await self.push(str(replies.NEED_LHLO))
            return True
        return False

    def _recipient_count(self) -> int:
        envelope = self.envelope
        return len(envelope.rcpt_order) if isinstance(envelope, InboundEnvelope) else 1

    async def _refuse_data(self, reply: str) -> None:
        # RFC 2033 §4.2: one reply per successful RCPT, even when all are the same.
        for _ in range(max(self._recipient_count(), 1)):
            await self.push(reply)

    async def _end_of_data(self, envelope: InboundEnvelope) -> list[str]:
        statuses: list[str] = await self.event_handler.handle_LMTP_DATA(
            self, self.session, envelope
        )
        return statuses

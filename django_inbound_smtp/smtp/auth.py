"""SMTP AUTH (PLAIN, LOGIN) for the submission listener, verified off the event loop.

aiosmtpd verifies credentials with a synchronous callback inside the event loop;
Django's password hashers take tens of milliseconds on purpose, so that would stall
every session. These mechanisms decode the client's data and await the handler's
``verify_login`` instead, which runs Django's ``authenticate()`` in the ORM thread.
"""

from __future__ import annotations

import binascii
from base64 import b64decode
from typing import TYPE_CHECKING, Any

from aiosmtpd.smtp import MISSING, AuthResult

__all__ = ["AuthMechanisms"]


def _b64(value: str) -> bytes | None:
    try:
        return b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return None


class AuthMechanisms:
    """Mixin for the SMTP protocol: ``auth_PLAIN`` and ``auth_LOGIN`` (RFC 4616, 4954)."""

    if TYPE_CHECKING:  # provided by aiosmtpd's SMTP, which this is mixed into (first)
        event_handler: Any

        async def push(self, status: str | bytes) -> None: ...

        async def challenge_auth(
            self,
            challenge: str | bytes,
            encode_to_b64: bool = True,  # noqa: FBT001, FBT002 - aiosmtpd's signature
            log_client_response: bool = False,  # noqa: FBT001, FBT002
        ) -> Any: ...

    async def _verify(self, login: bytes, password: bytes) -> AuthResult:
        username = await self.event_handler.verify_login(self, login, password)
        if username is None:
            return AuthResult(success=False, handled=True)  # the handler has answered
        return AuthResult(success=True, auth_data=username)

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        if len(args) == 1:
            data = await self.challenge_auth("")
            if data is MISSING:
                return AuthResult(success=False)
        else:
            data = _b64(args[1])
        # "authzid NUL authcid NUL passwd" (RFC 4616 §2); authzid is ignored.
        parts = data.split(b"\x00") if isinstance(data, bytes) else []
        if len(parts) != 3:
            await self.push("501 5.5.2 Malformed AUTH PLAIN data")
            return AuthResult(success=False, handled=True)
        return await self._verify(parts[1], parts[2])

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        login = _b64(args[1]) if len(args) > 1 else await self.challenge_auth("User Name\x00")
        if login is None:
            await self.push("501 5.5.2 Can't decode base64")
            return AuthResult(success=False, handled=True)
        if login is MISSING:
            return AuthResult(success=False)
        password = await self.challenge_auth("Password\x00")
        if password is MISSING:
            return AuthResult(success=False)
        return await self._verify(login, password)

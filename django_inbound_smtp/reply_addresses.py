"""Signed reply addresses: ``reply+<token>@<domain>``, bound to a model instance.

:func:`reply_address` makes one for an outgoing notification; a reply to it is
accepted at RCPT time only when its token verifies, and processing hands the object
to receivers (``recipient.reply_object``). :func:`return_path` makes a signed
return path (VERP): a bounce to it names the recipient the original mail went to.

**The token.** A compact binary reference (content type, primary key, optional user,
optional expiry), authenticated with an HMAC-SHA256 truncated to 80 bits, keyed by
``SECRET_KEY`` through Django's ``salted_hmac`` with a salt of our own. Tokens made
with a key still listed in ``SECRET_KEY_FALLBACKS`` keep verifying, so the key can be
rotated. Encoded in lower-case base32 (``a-z2-7``): mail systems may change the case
of a local part on the way, and an upper-cased token decodes the same. Integer keys
up to 2**63 keep the local part within RFC 5321's 64 octets.

**What it proves.** That we made this address, for this object (and user), and it has
not expired. Not who is replying: anyone the notification reached (a forward, a CC)
holds the address. For that, a token issued ``for_user`` gets a verdict per reply
(``InboundRecipient.reply_trust``): see the README, *Signed reply addresses*.
"""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.db import models
from django.utils.crypto import salted_hmac

from django_inbound_smtp._token_codec import BadToken, Reader, decode, encode, key_bytes, varint
from django_inbound_smtp.conf import get_settings
from django_inbound_smtp.envelope import MAX_LOCAL_PART_LENGTH, address_key, split_address
from django_inbound_smtp.models import ReturnPath

__all__ = [
    "DEFAULT",
    "BadToken",
    "Reference",
    "reply_address",
    "resolve",
    "return_path",
    "token_of",
    "verify",
]

#: A new version of the format changes the salt, so old tokens fail as forged.
SALT: Final = "django_inbound_smtp.reply_addresses.v1"
MAC_BYTES: Final = 10  # 80 bits: far beyond what guessing over SMTP can reach

_HAS_USER, _VERP, _EXPIRES = 0x01, 0x02, 0x04
# Two bits each for how the object's and the user's keys are written (_codec kinds).
_OBJECT_SHIFT, _USER_SHIFT = 3, 5


class _Default:
    def __repr__(self) -> str:
        return "DEFAULT"


#: ``expires=DEFAULT``: ``INBOUND_SMTP["REPLY_ADDRESS_EXPIRY"]`` seconds from now.
DEFAULT: Final = _Default()
Expiry = timedelta | datetime | None | _Default


@dataclass(frozen=True, slots=True)
class Reference:
    """What a verified token names."""

    content_type_id: int
    object_id: Any
    user_id: Any = None
    expires_at: datetime | None = None
    #: A signed return path (VERP), not a reply address.
    return_path: bool = False


def _mac(payload: bytes, secret: str | bytes) -> bytes:
    return salted_hmac(SALT, payload, secret=secret, algorithm="sha256").digest()[:MAC_BYTES]


def _expires_at(expires: Expiry) -> datetime | None:
    if isinstance(expires, _Default):
        seconds = get_settings().REPLY_ADDRESS_EXPIRY
        return None if seconds is None else datetime.now(UTC) + timedelta(seconds=seconds)
    if isinstance(expires, timedelta):
        return datetime.now(UTC) + expires
    if expires is not None and expires.tzinfo is None:
        raise ValueError("expires must be an aware datetime (USE_TZ), a timedelta or None")
    return expires


def _token(
    content_type_id: int, object_id: Any, *, user_id: Any, expires: Expiry, verp: bool
) -> str:
    object_kind, object_bytes = key_bytes(object_id)
    flags = object_kind << _OBJECT_SHIFT | (_VERP if verp else 0)
    tail = b""
    if user_id is not None:
        user_kind, tail = key_bytes(user_id)
        flags |= _HAS_USER | user_kind << _USER_SHIFT
    expires_at = _expires_at(expires)
    if expires_at is not None:
        flags |= _EXPIRES
        # Whole seconds, rounded up; unsigned 32 bits (until 2106).
        tail += struct.pack(">I", max(0, min(int(expires_at.timestamp()) + 1, 2**32 - 1)))
    payload = bytes([flags]) + varint(content_type_id) + object_bytes + tail
    return encode(payload + _mac(payload, settings.SECRET_KEY))


def token_of(address: str) -> tuple[str, str] | None:
    """``("reply" | "return_path", token)`` if ``address`` has the form of a signed
    address on one of ``REPLY_ADDRESS_DOMAINS`` (not yet verified), else ``None``."""
    conf = get_settings()
    local, domain = split_address(address)
    if domain not in conf.REPLY_ADDRESS_DOMAINS:
        return None
    prefix, separator, token = local.partition(conf.REPLY_ADDRESS_SEPARATOR)
    if not separator or not token:
        return None
    prefix = prefix.lower()  # a local part may be case-folded on the way
    if prefix == conf.REPLY_ADDRESS_PREFIX.lower():
        return "reply", token
    if prefix == conf.RETURN_PATH_PREFIX.lower():
        return "return_path", token
    return None


def verify(token: str, *, now: datetime | None = None) -> Reference:
    """The reference a token carries; raises :class:`BadToken` (``malformed``,
    ``forged`` or ``expired``). Pure computation: no database, safe on the event loop."""
    data = decode(token)
    if len(data) <= MAC_BYTES:
        raise BadToken("malformed")
    payload, mac = data[:-MAC_BYTES], data[-MAC_BYTES:]
    keys = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", ())]
    # Every key is tried (no early exit), so timing says nothing about which one matched.
    matched = [hmac.compare_digest(mac, _mac(payload, key)) for key in keys]
    if not any(matched):
        raise BadToken("forged")
    reader = Reader(payload)
    (flags,) = reader.take(1)
    content_type_id = reader.varint()
    object_id = reader.key(flags >> _OBJECT_SHIFT & 0x3)
    user_id = reader.key(flags >> _USER_SHIFT & 0x3) if flags & _HAS_USER else None
    expires_at = None
    if flags & _EXPIRES:
        expires_at = datetime.fromtimestamp(struct.unpack(">I", reader.take(4))[0], UTC)
    if reader.at != len(payload):
        raise BadToken("malformed")
    if expires_at is not None and expires_at <= (now or datetime.now(UTC)):
        raise BadToken("expired")
    return Reference(content_type_id, object_id, user_id, expires_at, bool(flags & _VERP))


def resolve(reference: Reference) -> models.Model:
    """The object a verified reference names; raises ``BadToken("gone")``. Queries the
    database: call it off the event loop."""
    try:
        content_type = ContentType.objects.get_for_id(reference.content_type_id)
        model = content_type.model_class()
        if model is None:
            raise BadToken("gone")
        return model._default_manager.get(pk=reference.object_id)
    except (ContentType.DoesNotExist, ObjectDoesNotExist, ValidationError, ValueError, TypeError):
        raise BadToken("gone") from None


def _address(prefix: str, token: str, domain: str | None) -> str:
    conf = get_settings()
    domain = domain or (conf.REPLY_ADDRESS_DOMAINS or ("",))[0]
    if domain.lower() not in conf.REPLY_ADDRESS_DOMAINS:
        raise ValueError(
            f"{domain!r} is not in INBOUND_SMTP['REPLY_ADDRESS_DOMAINS']: mail to it would be "
            "refused"
        )
    local = f"{prefix}{conf.REPLY_ADDRESS_SEPARATOR}{token}"
    if len(local.encode("utf-8")) > MAX_LOCAL_PART_LENGTH:
        raise ValueError(
            f"the local part would be {len(local)} octets, over RFC 5321's 64: use a shorter "
            "prefix, or integer or UUID keys"
        )
    return f"{local}@{domain.lower()}"


def reply_address(
    obj: models.Model,
    *,
    for_user: models.Model | None = None,
    expires: Expiry = DEFAULT,
    domain: str | None = None,
) -> str:
    """A signed reply address for ``obj`` (a saved model instance):
    ``reply+<token>@<first REPLY_ADDRESS_DOMAINS entry>``.

    ``for_user``: the user it is sent to; a reply then counts as that user's only if
    its sender is that user and authenticated. ``expires``: a ``timedelta`` from now,
    an aware ``datetime``, ``None`` (never), or the ``REPLY_ADDRESS_EXPIRY`` default.
    Raises ``ValueError`` for an unsaved object, a domain we do not serve, or keys too
    long for the 64-octet local part."""
    if obj.pk is None or (for_user is not None and for_user.pk is None):
        raise ValueError("reply_address() needs saved objects (one has no primary key)")
    content_type = ContentType.objects.get_for_model(obj, for_concrete_model=False)
    token = _token(
        content_type.pk,
        obj.pk,
        user_id=None if for_user is None else for_user.pk,
        expires=expires,
        verp=False,
    )
    return _address(get_settings().REPLY_ADDRESS_PREFIX, token, domain)


def return_path(recipient: str, *, expires: Expiry = DEFAULT, domain: str | None = None) -> str:
    """A signed return path (VERP) for a message sent to ``recipient``, to use as the
    envelope sender (``MAIL FROM``) of that message: Django's ``EmailMessage`` uses
    ``from_email`` as the envelope sender, and a ``From`` entry in ``headers`` sets
    the header readers see. A bounce to it is accepted at RCPT, and its recipient row
    carries ``bounce_recipient`` (``recipient``, lower-cased). Writes one
    ``ReturnPath`` row per distinct address; call it where the database is reachable.
    """
    row, _created = ReturnPath.objects.get_or_create(address=address_key(recipient))
    content_type = ContentType.objects.get_for_model(ReturnPath)
    token = _token(content_type.pk, row.pk, user_id=None, expires=expires, verp=True)
    return _address(get_settings().RETURN_PATH_PREFIX, token, domain)

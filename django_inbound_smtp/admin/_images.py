"""Which attachments may be shown as images, and the signed URLs the preview uses.

Only raster formats a browser decodes without running anything (PNG, GIF, JPEG,
WebP; never SVG, which is a document that can hold scripts) are served inline, and
only when the bytes start the way the declared type says: the declared type is the
sender's claim, the magic number is a fact.

The preview frame is sandboxed (an opaque origin), so the browser sends its image
requests as cross-site and leaves out the admin's ``SameSite=Lax`` session cookie.
Its image URLs therefore carry a token, signed with ``SECRET_KEY``, naming the
attachment and the staff user the preview was made for; the endpoint checks that
user's permission again when the image is fetched, and the token expires.
"""

from __future__ import annotations

from django.core import signing

__all__ = [
    "SNIFF_BYTES",
    "TOKEN_MAX_AGE",
    "is_raster_type",
    "sign_image",
    "sniff_raster",
    "unsign_image",
]

TOKEN_MAX_AGE = 3600  # seconds: an open preview reloaded later gets new tokens
_SALT = "django_inbound_smtp.admin.inline-image"

_MAGIC: dict[str, tuple[bytes, ...]] = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/jpeg": (b"\xff\xd8\xff",),
}
_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/x-png": "image/png"}
SNIFF_BYTES = 16


def _declared(content_type: str) -> str:
    kind = content_type.split(";", 1)[0].strip().lower()
    return _ALIASES.get(kind, kind)


def is_raster_type(content_type: str) -> bool:
    """Whether the declared type is one we may serve inline (PNG, GIF, JPEG, WebP)."""
    return _declared(content_type) in {*_MAGIC, "image/webp"}


def sniff_raster(head: bytes, declared: str) -> str | None:
    """The type to serve ``head`` (the first bytes) as, or ``None`` when the bytes are
    not the safe raster image ``declared`` claims."""
    kind = _declared(declared)
    if kind == "image/webp":
        return kind if head[:4] == b"RIFF" and head[8:12] == b"WEBP" else None
    if any(head.startswith(magic) for magic in _MAGIC.get(kind, ())):
        return kind
    return None


def sign_image(attachment_pk: int, user_pk: object) -> str:
    """A token letting ``user_pk``'s browser fetch attachment ``attachment_pk``."""
    return signing.TimestampSigner(salt=_SALT).sign(f"{attachment_pk}:{user_pk}")


def unsign_image(token: str, attachment_pk: int) -> str | None:
    """The user pk a valid, unexpired token for ``attachment_pk`` names, else ``None``."""
    try:
        value = signing.TimestampSigner(salt=_SALT).unsign(token, max_age=TOKEN_MAX_AGE)
    except signing.BadSignature:
        return None
    pk, _, user_pk = value.partition(":")
    return user_pk if pk == str(attachment_pk) and user_pk else None

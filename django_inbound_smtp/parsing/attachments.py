"""Attachment descriptors and the scrubbing of the names a sender gives them.

Pure (stdlib only). A filename in a received message is hostile input: it is display
text, never a storage key (files are stored under random names, hostile-inputs #79).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from django_inbound_smtp.parsing import clean_text

__all__ = ["AttachmentPart", "sanitize_filename"]

# Bidi marks and controls beyond those clean_text removes: LRM/RLM (U+200E/F) and the
# Arabic letter mark (U+061C) can reorder how a name is displayed just as an override
# can. Lone surrogates cannot be stored as UTF-8 and mean nothing in a name.
_INVISIBLE = re.compile("[\u061c\u200e\u200f\ud800-\udfff]")
# Leading dots (".." or a hidden ".profile"), spaces and drive letters ("C:evil.exe"
# names a file relative to the current folder of drive C), in any mix: one pass, so
# that cleaning a result again changes nothing.
_LEADING = re.compile("^(?:[A-Za-z]:|[. ])+")
# When a long name is cut, an extension up to this long is kept (".pdf", ".tar.gz" is
# kept as ".gz"); anything longer is not an extension a program would look at.
_MAX_EXTENSION = 16


def sanitize_filename(name: str, *, limit: int = 255) -> str:
    """A display-safe file name taken from a sender-supplied ``name``; never raises.

    Keeps only the last path component (``/`` and ``\\`` both separate, a drive letter
    is dropped); removes NUL, CR, LF and other C0/C1 controls, bidi controls and
    marks (U+202A-202E, U+2066-2069, U+200E/F, U+061C) and lone surrogates; folds white
    space; applies NFC; drops leading dots (no hidden files, no ``.`` or ``..``) and
    trailing dots and spaces (Windows drops them too); cuts to at most ``limit``
    characters, keeping a short extension. Returns ``""`` when nothing is left: the
    caller then picks a default. Cleaning a result again returns it unchanged.
    """
    # Controls out before the split: "a/\x00../b" must not hide a separator.
    value = clean_text(_INVISIBLE.sub("", name), limit=len(name) + 1)
    value = value.replace("\\", "/").rsplit("/", 1)[-1]
    value = _LEADING.sub("", value).rstrip(". ")
    if len(value) <= limit:
        return value
    stem, dot, extension = value.rpartition(".")
    if dot and 0 < len(extension) < min(_MAX_EXTENSION, limit - 1):
        value = stem[: limit - len(extension) - 1].rstrip(". ") + "." + extension
    else:
        value = value[:limit].rstrip(". ")
    return value


@dataclass(frozen=True, slots=True)
class AttachmentPart:
    """One attachment (or inline part) of a parsed message, with its decoded bytes.

    ``filename`` is already sanitized and never empty; ``content_type`` is a lowercase
    ``maintype/subtype``; ``content_id`` has no angle brackets (``""`` when absent);
    ``inline`` is true for ``Content-Disposition: inline`` and for parts with a
    Content-ID inside ``multipart/related``. ``payload`` is transfer-decoded (for a
    ``message/*`` part: the attached message, serialized). ``size`` and ``sha256`` (hex)
    are derived from ``payload`` when the value is built, so they cannot disagree.
    """

    filename: str
    content_type: str
    content_id: str
    inline: bool
    payload: bytes = field(repr=False)
    size: int = field(init=False)
    sha256: str = field(init=False)

    def __post_init__(self) -> None:
        # Frozen: the derived fields are set once, here, the way dataclasses do it.
        object.__setattr__(self, "size", len(self.payload))
        object.__setattr__(self, "sha256", hashlib.sha256(self.payload).hexdigest())

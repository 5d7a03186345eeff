"""The lines mail clients put around a quoted message, in the languages they ship.

Private to ``parsing.quoted`` and ``parsing.quoted_html``. Every pattern is matched
against one line (or a wrapped attribution joined from two or three), at most
``MAX_MARKER`` characters long, with bounded repetitions only: the cost is linear in
the text whatever the sender wrote.
"""

from __future__ import annotations

import re

__all__ = [
    "MAX_MARKER",
    "is_attribution",
    "is_closing",
    "is_contact_line",
    "is_forward_marker",
    "is_forward_subject",
    "is_header_block",
    "is_mobile_line",
    "is_original_marker",
    "is_quoted",
    "is_signature_separator",
    "may_start_attribution",
    "normalise",
]

# A longer line is never a marker (attributions run to ~200 characters).
MAX_MARKER = 400

_SPACES = re.compile(r"[\s\u00a0\u202f\u2007]+")

# "On <date>, <name> wrote:" and its translations: the line ends with the verb (and a
# colon), or it starts with the localized "On" and ends with a colon after an address.
_ATTRIBUTION_END = re.compile(
    r"(?:\bwrote|\bschrieb|\ba écrit|\bescribió|\bha scritto|\bschreef|\bgeschreven"
    r"|\bescreveu|\bnapisał\(a\)|\bskrev|\bkirjoitti|написал\(а\)|написала?|пишет"
    r"|書きました|のメール)\s?:$",
    re.IGNORECASE,
)
# Or it starts with the localized "On" and ends with a word or an address and a colon
# (Thunderbird: "Am 01.06.26 um 10:00 schrieb Bob:"). Two cheap tests, no backtracking.
_ATTRIBUTION_START = re.compile(r"^(?:on|am|le|el|il|op|em|dne|den|w dniu)\s", re.IGNORECASE)
_ATTRIBUTION_START_END = re.compile(r"(?:\w|>\)?)\s?:$")
_ATTRIBUTION_VERBS = ("schrieb", "schreef", "geschreven", "wrote", "écrit", "scritto")
# Gmail in Russian, Japanese and other languages: "<date>, <name> <address>:".
_ADDRESS_THEN_COLON = re.compile(r"<\s?[^<>\s@]{1,100}@[^<>\s]{1,200}\s?>\)?\s?:$")
# K-9 Mail in German: "<name> schrieb am <date>:".
_K9 = re.compile(r"\bschrieb am\b.{1,100}:$", re.IGNORECASE)
_HAS_DATE_OR_ADDRESS = re.compile(r"\d|@")

_ORIGINAL = re.compile(
    r"^-{2,}\s?(?:original message|ursprüngliche nachricht|message d'origine|mensaje original"
    r"|messaggio originale|oorspronkelijk bericht|mensagem original|исходное сообщение"
    r"|元のメッセージ|original meddelelse|originalmeddelande|oryginalna wiadomość)\s?-{2,}$",
    re.IGNORECASE,
)
_FORWARD = re.compile(
    r"^(?:-{2,}\s?(?:forwarded message|weitergeleitete nachricht|message transféré"
    r"|mensaje reenviado|messaggio inoltrato|doorgestuurd bericht|mensagem encaminhada"
    r"|пересылаемое сообщение|転送されたメッセージ|original message follows)\s?-{2,}"
    r"|begin forwarded message:|anfang der weitergeleiteten nachricht:"
    r"|début du message réexpédié\s?:|inicio del mensaje reenviado:"
    r"|inizio messaggio inoltrato:|begin doorgestuurd bericht:|início da mensagem reencaminhada:"
    r"|начало переадресованного сообщения:|転送されたメッセージ:)$",
    re.IGNORECASE,
)
_FORWARD_SUBJECT = re.compile(
    r"^\s?(?:fwd?|wg|tr|rv|enc|doorst|i|vs|pd|пересл|転送)\s?:", re.IGNORECASE
)

# Outlook's header block: a "From:" line, then within a few lines "Sent:" (or Date:)
# and "To:" or "Subject:", each in the client's language.
_FROM = re.compile(
    r"^\*?(?:from|von|de|da|van|от|差出人|från|fra|od|kimden)\s?:\*?\s?\S", re.IGNORECASE
)
_SENT = re.compile(
    r"^\*?(?:sent|date|gesendet|datum|envoyé|enviado|enviado el|enviada em|fecha|inviato|data"
    r"|verzonden|отправлено|дата|送信日時|日付|skickat|sendt|wysłano)\s?:\*?",
    re.IGNORECASE,
)
_TO_OR_SUBJECT = re.compile(
    r"^\*?(?:to|an|à|a|para|aan|кому|宛先|till|til|do|subject|betreff|objet|asunto|oggetto"
    r"|onderwerp|assunto|тема|件名|ämne|emne|temat|cc)\s?:\*?",
    re.IGNORECASE,
)
_UNDERSCORES = re.compile(r"^_{20,}$")

# What phones and web mailers append: "Sent from my iPhone" and its translations.
_MOBILE = re.compile(
    r"^(?:sent from|sent with|sent via|sent using|get outlook for|gesendet von|gesendet mit"
    r"|von meinem .{1,40} gesendet|envoyé de|envoyé depuis|enviado desde|enviado do|enviado de"
    r"|enviado a partir d|inviato da|verzonden (?:met|vanaf|van)|verstuurd (?:met|vanaf|van)"
    r"|outlook für (?:android|ios) herunterladen|obtenir outlook pour|obtener outlook para"
    r"|scarica outlook per|outlook voor (?:android|ios) downloaden|baixe o outlook para"
    r"|obter o outlook para|скачайте outlook для|загрузите outlook для"
    r"|отправлено с|отправлено из|.{1,30}から送信|(?:ios|android) 版 outlook を入手)\b.{0,70}$",
    re.IGNORECASE,
)
_CLOSING = re.compile(
    r"^(?:(?:kind |best |warm |many )?regards|thanks|thank you|best|cheers|sincerely"
    r"|(?:viele |beste |liebe )?grüße|mit freundlichen grüßen|cordialement|bien à vous"
    r"|saludos|un saludo|atentamente|grazie|cordiali saluti|(?:met vriendelijke )?groet(?:en)?"
    r"|abraços|atenciosamente|с уважением|спасибо|よろしくお願いします)[,.!。]?$",
    re.IGNORECASE,
)
_CONTACT = re.compile(
    r"(?:\+?\d[\d ()./-]{6,}\d|\bwww\.|https?://|\S\s\|\s\S|\b(?:tel|phone|mobile|fax)\b)",
    re.IGNORECASE,
)
_SIGNATURE = re.compile(r"^-- ?$")
_QUOTED = re.compile(r"^[ \t]{0,3}>")


def normalise(line: str) -> str:
    """``line`` with its white space runs (no-break spaces included) made one space."""
    return _SPACES.sub(" ", line).strip()


def is_quoted(line: str) -> bool:
    return bool(_QUOTED.match(line))


def is_attribution(line: str) -> bool:
    """``line`` (normalised) is an "On <date>, <name> wrote:" line in some language.

    It must hold a digit or an ``@`` (a date or an address): "On second thought, here
    is what Bob wrote:" is prose."""
    if len(line) > MAX_MARKER or not line.endswith(":"):
        return False
    if not _HAS_DATE_OR_ADDRESS.search(line):
        return False
    if _ATTRIBUTION_END.search(line) or _ADDRESS_THEN_COLON.search(line) or _K9.search(line):
        return True
    lowered = line.lower()
    return bool(
        _ATTRIBUTION_START.match(line)
        and _ATTRIBUTION_START_END.search(line)
        and any(verb in lowered for verb in _ATTRIBUTION_VERBS)
    )


def may_start_attribution(line: str) -> bool:
    """``line`` (normalised) may be the first line of a wrapped attribution."""
    return len(line) <= MAX_MARKER and bool(_ATTRIBUTION_START.match(line) or line[:1].isdigit())


def is_original_marker(line: str) -> bool:
    """``-----Original Message-----`` and its translations."""
    return len(line) <= MAX_MARKER and bool(_ORIGINAL.match(line))


def is_forward_marker(line: str) -> bool:
    """``---------- Forwarded message ---------``, ``Begin forwarded message:`` ..."""
    return len(line) <= MAX_MARKER and bool(_FORWARD.match(line))


def is_forward_subject(subject: str) -> bool:
    """``Fwd:``, ``FW:``, ``WG:``, ``TR:``, ``RV:``, ``ENC:`` ... starts ``subject``."""
    return bool(_FORWARD_SUBJECT.match(subject[:40]))


def is_header_block(lines: list[str]) -> bool:
    """``lines`` (normalised, the first ones of a candidate) start with Outlook's
    "From: / Sent: / To: / Subject:" block, in some language (or after a line of
    underscores)."""
    if lines and _UNDERSCORES.match(lines[0]):
        lines = lines[1:]
    if not lines or len(lines[0]) > MAX_MARKER or not _FROM.match(lines[0]):
        return False
    window = lines[1:6]
    return any(_SENT.match(line) for line in window) and any(
        _TO_OR_SUBJECT.match(line) for line in window
    )


def is_mobile_line(line: str) -> bool:
    """ "Sent from my iPhone", "Get Outlook for Android", "Envoyé de mon iPhone" ..."""
    return len(line) <= 100 and bool(_MOBILE.match(line))


def is_closing(line: str) -> bool:
    """ "Kind regards," "Thanks," "Viele Grüße" ... alone on a line (normalised)."""
    return len(line) <= 40 and bool(_CLOSING.match(line))


def is_contact_line(line: str) -> bool:
    """A line of a signature block: a phone number, a web address, "a | b"."""
    return len(line) <= 120 and bool(_CONTACT.search(line))


def is_signature_separator(line: str) -> bool:
    """The ``-- `` line (RFC 3676 section 4.3), its trailing space often lost."""
    return bool(_SIGNATURE.match(line))

"""The verdicts of one transaction, our ``Authentication-Results`` field (RFC 8601) and
the renaming of forged ones. Pure: stdlib only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses
from typing import Any

__all__ = [
    "METHODS",
    "Verdict",
    "Verdicts",
    "authentication_results",
    "from_domain",
    "rename_forged",
]

#: Every check, in the order they run (and are stored and shown).
METHODS = ("dnsbl", "iprev", "sender_domain", "spf", "spf_helo", "dkim", "dmarc", "arc")
FORGED_NAME = b"X-Original-Authentication-Results"
_UNSAFE = re.compile(r"[^\x20-\x7e]|[()\\]")
_FIELD = re.compile(rb"^authentication-results[ \t]*:", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Verdict:
    """``result`` in RFC 8601's words (``pass fail softfail neutral none temperror
    permerror``; ``nullmx`` for a sender domain that refuses all mail) and why."""

    result: str
    reason: str = ""
    detail: str = ""


@dataclass
class Verdicts:
    """What the checks of one transaction found; stored with the message."""

    values: dict[str, Verdict] = field(default_factory=dict)
    dkim_signatures: list[dict[str, str]] = field(default_factory=list)
    dmarc_policy: str = ""
    from_domain: str = ""
    sender_verified: bool = False

    def record(self, header: str) -> dict[str, Any]:
        """Field values of the stored ``SenderCheck`` row."""
        row: dict[str, Any] = {}
        for method in METHODS:
            verdict = self.values.get(method)
            row[f"{method}_result"] = verdict.result if verdict else ""
            row[f"{method}_reason"] = (verdict.reason if verdict else "")[:255]
        row.update(
            sender_verified=self.sender_verified,
            from_domain=self.from_domain[:255],
            dmarc_policy=self.dmarc_policy[:16],
            authentication_results=header,
            details={
                "dkim_signatures": self.dkim_signatures,
                **{m: v.detail for m, v in self.values.items() if v.detail},
            },
        )
        return row


def _comment(text: str) -> str:
    text = _UNSAFE.sub("", text).strip()[:120]
    return f" ({text})" if text else ""


def _value(text: str) -> str:
    # A pvalue must be a token or an address; anything else is left out.
    return text if re.fullmatch(r"[A-Za-z0-9_.+=@-]{1,254}", text) else ""


def authentication_results(
    authserv_id: str, verdicts: Verdicts, *, mail_from: str, helo: str, peer: str
) -> bytes:
    """Our ``Authentication-Results:`` field, folded, ending in CRLF (RFC 8601 §2.2)."""
    parts: list[str] = []
    values = verdicts.values
    if (v := values.get("iprev")) is not None:
        parts.append(f"iprev={v.result}{_comment(v.detail)} policy.iprev={_value(peer)}")
    if (v := values.get("spf")) is not None:
        identity = (
            f"smtp.mailfrom={_value(mail_from)}" if mail_from else f"smtp.helo={_value(helo)}"
        )
        parts.append(f"spf={v.result}{_comment(v.reason)} {identity}")
    if (v := values.get("spf_helo")) is not None and mail_from:
        parts.append(f"spf={v.result}{_comment(v.reason)} smtp.helo={_value(helo)}")
    if (v := values.get("dkim")) is not None:
        signatures = verdicts.dkim_signatures or [{}]
        for signature in signatures:
            result = signature.get("result", v.result)
            domain, selector = (
                _value(signature.get("domain", "")),
                _value(signature.get("selector", "")),
            )
            keys = (f" header.d={domain}" if domain else "") + (
                f" header.s={selector}" if selector else ""
            )
            parts.append(f"dkim={result}{_comment(signature.get('reason', v.reason))}{keys}")
    if (v := values.get("dmarc")) is not None:
        policy = f" (p={verdicts.dmarc_policy})" if verdicts.dmarc_policy else ""
        domain = _value(verdicts.from_domain)
        parts.append(f"dmarc={v.result}{policy}" + (f" header.from={domain}" if domain else ""))
    if (v := values.get("arc")) is not None:
        parts.append(f"arc={v.result}")
    body = ";\r\n\t".join([_value(authserv_id) or "localhost", *(parts or ["none"])])
    return f"Authentication-Results: {body}\r\n".encode("ascii")


def _authserv_id(value: bytes) -> str:
    text = re.sub(r"\([^)]*\)", " ", value.decode("utf-8", "replace"))
    head = text.split(";", 1)[0].split()
    return head[0].lower() if head else ""


def rename_forged(content: bytes, authserv_id: str) -> tuple[bytes, int]:
    """Rename every incoming ``Authentication-Results`` field that claims to be ours
    (RFC 8601 §5: a receiver must not trust it) to ``X-Original-Authentication-Results``.
    Returns the new content and how many were renamed."""
    end = content.find(b"\r\n\r\n")
    head = content if end < 0 else content[: end + 2]
    lines = head.split(b"\r\n")
    ours, renamed = authserv_id.lower(), 0
    for index, line in enumerate(lines):
        if not _FIELD.match(line):
            continue
        value = line.split(b":", 1)[1]
        for follow in lines[index + 1 :]:
            if follow[:1] not in (b" ", b"\t"):
                break
            value += follow
        if _authserv_id(value) == ours:
            lines[index] = FORGED_NAME + line[line.index(b":") :]
            renamed += 1
    if not renamed:
        return content, 0
    return b"\r\n".join(lines) + (b"" if end < 0 else content[end + 2 :]), renamed


def from_domain(content: bytes) -> str:
    """The domain of the single RFC 5322.From address, or ``""`` (none, or several)."""
    end = content.find(b"\r\n\r\n")
    headers = BytesHeaderParser(policy=compat32).parsebytes(content if end < 0 else content[:end])
    fields = headers.get_all("From") or []
    addresses = [a for _n, a in getaddresses([str(f) for f in fields]) if a]
    if len(fields) != 1 or len(addresses) != 1 or "@" not in addresses[0]:
        return ""
    return addresses[0].rpartition("@")[2].lower().rstrip(".")

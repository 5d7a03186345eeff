"""What a verdict does to the SMTP reply, per ``INBOUND_SMTP["SENDER_CHECKS"]``.

``off``: not checked. ``tag``: recorded only. ``tempfail``: a failure is answered 4xx.
``reject``: a failure is answered 5xx. Under ``tempfail`` and ``reject`` a check that
could not be completed (``temperror``) is answered ``451 4.4.3``; it is never 5xx.
"""

from __future__ import annotations

from django_inbound_smtp import replies
from django_inbound_smtp.conf import get_settings
from django_inbound_smtp.replies import Reply
from django_inbound_smtp.senderauth.results import Verdict

__all__ = ["POLICIES", "SETTING_KEYS", "enabled", "refusal"]

POLICIES = ("off", "tag", "tempfail", "reject")
#: Verdict name → its key in ``SENDER_CHECKS``.
SETTING_KEYS = {
    "dnsbl": "DNSBL",
    "iprev": "IPREV",
    "sender_domain": "SENDER_DOMAIN",
    "spf": "SPF",
    "dkim": "DKIM",
    "dmarc": "DMARC",
}

# check: (results that count as a failure, reply under reject, reply under tempfail)
_FAILURES: dict[str, tuple[frozenset[str], Reply, Reply]] = {
    "dnsbl": (frozenset({"fail"}), replies.DNSBL_REJECT, replies.DNSBL_TEMPFAIL),
    # RFC 8601 §3: permerror is "no PTR at all", fail "PTR does not resolve back".
    "iprev": (frozenset({"fail", "permerror"}), replies.IPREV_REJECT, replies.IPREV_TEMPFAIL),
    "sender_domain": (
        frozenset({"fail"}),
        replies.SENDER_DOMAIN_REJECT,
        replies.SENDER_DOMAIN_TEMPFAIL,
    ),
    "spf": (frozenset({"fail"}), replies.SPF_REJECT, replies.SPF_TEMPFAIL),
    "dkim": (frozenset({"fail"}), replies.DKIM_REJECT, replies.DKIM_TEMPFAIL),
    "dmarc": (frozenset({"fail"}), replies.DMARC_REJECT, replies.DMARC_TEMPFAIL),
}


def policy(check: str) -> str:
    """The configured policy of ``check`` (a verdict name such as ``"spf"``)."""
    return str(get_settings().SENDER_CHECKS.get(SETTING_KEYS[check], "off"))


def enabled(check: str) -> bool:
    return policy(check) != "off"


def refusal(check: str, verdict: Verdict, *, dmarc_policy: str = "") -> Reply | None:
    """The reply ``verdict`` calls for under the configured policy, or ``None`` to go on."""
    mode = policy(check)
    if mode in ("off", "tag"):
        return None
    if verdict.result == "temperror":
        return replies.TEMPORARY_DNS_FAILURE
    failures, reject, tempfail = _FAILURES[check]
    if check == "sender_domain" and verdict.result == "nullmx":
        return replies.NULL_MX_REJECT if mode == "reject" else tempfail
    if verdict.result not in failures:
        return None
    if check == "dmarc" and dmarc_policy != "reject":
        return None  # p=none and p=quarantine are recorded, never refused
    return reject if mode == "reject" else tempfail

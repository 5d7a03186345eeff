"""The default recipient validator: the ``Mailbox`` model.

Synchronous (it queries the database); the SMTP layer runs it in the ORM thread.
"""

from __future__ import annotations

import unicodedata

from django_inbound_smtp import replies
from django_inbound_smtp._db import unit_of_work
from django_inbound_smtp.conf import get_settings
from django_inbound_smtp.envelope import RecipientContext, ResolvedRecipient, split_address
from django_inbound_smtp.exceptions import Rejected
from django_inbound_smtp.models import CATCH_ALL_LOCAL_PART, Mailbox

__all__ = ["candidate_addresses", "mailbox_validator"]


def candidate_addresses(address: str, *, delimiter: str) -> list[tuple[str, str]]:
    """Mailbox addresses that may own ``address``, best match first, with the tag each implies.

    ``User+Tag@Example.org`` gives ``user+tag@example.org`` (exact), then
    ``user@example.org`` (tag ``Tag``), then ``*@example.org`` (catch-all).
    """
    local, domain = split_address(address)
    local_lower = local.lower()
    candidates = [(f"{local_lower}@{domain}", "")]
    if delimiter and delimiter in local_lower:
        base, _, tag = local.partition(delimiter)
        if base:
            candidates.append((f"{base.lower()}@{domain}", tag[:64]))
    candidates.append((f"{CATCH_ALL_LOCAL_PART}@{domain}", ""))
    return candidates


def mailbox_validator(address: str, *, context: RecipientContext) -> ResolvedRecipient | None:
    """Accept ``address`` if an active ``Mailbox`` (exact, plus-address base or catch-all)
    owns it.

    Unknown user on a domain that has an active mailbox: ``Rejected(550 5.1.1)``, except
    ``postmaster``, which is always accepted for a served domain (and bare).
    A domain with no active mailbox: ``None`` (abstain), so a later validator may accept
    it, and if none does the chain answers relay denied (``550 5.7.1``).
    """
    # NFC only (RFC 6531 §3.3): canonically equal spellings match; no NFKC folding,
    # which would map a look-alike (fullwidth "ｕser") onto a real user.
    address_nfc = unicodedata.normalize("NFC", address)
    local, domain = split_address(address_nfc)
    if not domain:
        # Only the bare "postmaster" passes syntax checks without a domain; RFC 5321
        # §4.5.1 says it MUST be accepted. It is stored without a mailbox.
        return ResolvedRecipient(address=address) if local.lower() == "postmaster" else None
    candidates = candidate_addresses(address_nfc, delimiter=get_settings().PLUS_DELIMITER)
    with unit_of_work():
        found = {
            mailbox.address: mailbox.pk
            for mailbox in Mailbox.objects.active()
            .filter(address__in=[c for c, _ in candidates])
            .only("pk", "address")
        }
        for candidate, tag in candidates:
            if candidate in found:
                return ResolvedRecipient(address=address, mailbox_id=found[candidate], tag=tag)
        if Mailbox.objects.serves_domain(domain):
            if local.lower() == "postmaster":
                return ResolvedRecipient(address=address)  # RFC 5321 §4.5.1, as above
            raise Rejected(replies.MAILBOX_UNKNOWN)
    return None

"""The default recipient validator: the ``Mailbox`` model, read through the directory.

Synchronous when it must query the database (the SMTP layer then runs it in the ORM
thread); answered on the event loop, without a query, while the process's directory of
mailboxes is younger than ``DIRECTORY_TTL`` (``validators.directory``).
"""

from __future__ import annotations

import unicodedata
from typing import Literal

from django_inbound_smtp import replies
from django_inbound_smtp.conf import get_settings
from django_inbound_smtp.envelope import RecipientContext, ResolvedRecipient, split_address
from django_inbound_smtp.exceptions import Rejected
from django_inbound_smtp.models import CATCH_ALL_LOCAL_PART
from django_inbound_smtp.validators._expiring import MISS, Miss
from django_inbound_smtp.validators.directory import Found, directory

__all__ = ["MailboxValidator", "candidate_addresses", "mailbox_validator"]


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


class MailboxValidator:
    """The ``Mailbox`` validator; :data:`mailbox_validator` is its one instance.

    Called as ``mailbox_validator(address, context=...)``: synchronous (it may query the
    database), so the chain runs it in the ORM thread. ``answer_from_memory`` gives the
    same answer from the process's directory without I/O when the directory is young
    enough, so the chain can answer on the event loop (see ``validators.directory``).
    """

    def __call__(self, address: str, *, context: RecipientContext) -> ResolvedRecipient | None:
        """Accept ``address`` if an active ``Mailbox`` (exact, plus-address base or
        catch-all) owns it.

        Unknown user on a domain that has an active mailbox: ``Rejected(550 5.1.1)``,
        except ``postmaster``, which is always accepted for a served domain (and bare).
        A domain with no active mailbox: ``None`` (abstain), so a later validator may
        accept it, and if none does the chain answers relay denied (``550 5.7.1``).
        Answers from data at most ``DIRECTORY_TTL`` seconds old; raises the database's
        error when it cannot read fresh enough data.
        """
        question = _Question(address)
        if not question.domain:
            return question.bare()
        return question.decide(directory.lookup(question.candidates, question.domain))

    def answer_from_memory(
        self, address: str, *, context: RecipientContext
    ) -> ResolvedRecipient | None | Literal[Miss.MISS]:
        """The same answer without I/O, or ``MISS`` when memory is too old to give it."""
        question = _Question(address)
        if not question.domain:
            return question.bare()
        found = directory.from_memory(question.candidates, question.domain)
        return MISS if found is None else question.decide(found)


class _Question:
    """One RCPT address, normalized, with the mailbox addresses that may own it."""

    def __init__(self, address: str) -> None:
        self.address = address
        # NFC only (RFC 6531 §3.3): canonically equal spellings match; no NFKC folding,
        # which would map a look-alike (fullwidth "ｕser") onto a real user.
        address_nfc = unicodedata.normalize("NFC", address)
        self.local, self.domain = split_address(address_nfc)
        self.tagged = (
            candidate_addresses(address_nfc, delimiter=get_settings().PLUS_DELIMITER)
            if self.domain
            else []
        )
        self.candidates = [candidate for candidate, _ in self.tagged]

    def bare(self) -> ResolvedRecipient | None:
        # Only the bare "postmaster" passes syntax checks without a domain; RFC 5321
        # §4.5.1 says it MUST be accepted. It is stored without a mailbox.
        return ResolvedRecipient(address=self.address) if self.is_postmaster else None

    @property
    def is_postmaster(self) -> bool:
        return self.local.lower() == "postmaster"

    def decide(self, found: Found) -> ResolvedRecipient | None:
        for candidate, tag in self.tagged:  # best match first
            if candidate in found.owners:
                return ResolvedRecipient(
                    address=self.address, mailbox_id=found.owners[candidate], tag=tag
                )
        if found.served:
            if self.is_postmaster:
                return ResolvedRecipient(address=self.address)  # RFC 5321 §4.5.1, as above
            raise Rejected(replies.MAILBOX_UNKNOWN)
        return None


#: The default validator (``INBOUND_SMTP["RECIPIENT_VALIDATORS"]``).
mailbox_validator = MailboxValidator()

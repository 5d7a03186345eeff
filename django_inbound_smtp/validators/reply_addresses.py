"""The recipient validator of signed reply addresses and return paths.

``reply+<token>@<a REPLY_ADDRESS_DOMAINS domain>`` is decided here, before the mailbox
validator: a token that verifies and names an existing object is accepted with a
:class:`~django_inbound_smtp.envelope.SignedReference`; a forged, malformed, expired
or dangling one gets ``550 5.1.1``, each with its own reason in the log. Any other
address is not ours to decide (``None``). The signature and the expiry are checked on
the event loop (pure computation); only the object lookup runs in a database thread.
"""

from __future__ import annotations

import logging
from typing import Literal

from django_inbound_smtp import metrics, replies
from django_inbound_smtp.envelope import RecipientContext, ResolvedRecipient, SignedReference
from django_inbound_smtp.exceptions import Rejected
from django_inbound_smtp.models import ReturnPath
from django_inbound_smtp.reply_addresses import BadToken, Reference, resolve, token_of, verify
from django_inbound_smtp.validators._expiring import MISS, Miss

__all__ = ["ReplyAddressValidator", "reply_address_validator"]

logger = logging.getLogger(__name__)


def _refuse(address: str, reason: str) -> Rejected:
    # The reason stays in our log: the client learns only that the mailbox is unknown.
    logger.info("signed address refused (%s): %s", reason, address, extra={"reply_token": reason})
    metrics.signed_address(reason)
    return Rejected(replies.MAILBOX_UNKNOWN)


def _checked(address: str) -> Reference | None:
    """The verified reference of a signed address, ``None`` for any other address;
    raises ``Rejected`` for a bad token. No I/O."""
    found = token_of(address)
    if found is None:
        return None
    kind, token = found
    try:
        reference = verify(token)
    except BadToken as error:
        raise _refuse(address, error.reason) from None
    if reference.return_path != (kind == "return_path"):
        # A reply token under the return-path prefix (or the reverse): not what we made.
        raise _refuse(address, "forged")
    return reference


class ReplyAddressValidator:
    """Signed reply addresses and return paths (see the module docstring);
    :data:`reply_address_validator` is its one instance."""

    def __call__(self, address: str, *, context: RecipientContext) -> ResolvedRecipient | None:
        """Accept a valid signed address whose object exists; refuse a bad one with
        ``550 5.1.1``; abstain on anything else. Queries the database."""
        reference = _checked(address)
        if reference is None:
            return None
        try:
            target = resolve(reference)
        except BadToken as error:
            raise _refuse(address, error.reason) from None
        bounce_recipient = target.address if isinstance(target, ReturnPath) else ""
        metrics.signed_address("accepted")
        return ResolvedRecipient(
            address=address,
            signed=SignedReference(
                content_type_id=reference.content_type_id,
                object_id=str(reference.object_id),
                user_id="" if reference.user_id is None else str(reference.user_id),
                bounce_recipient=bounce_recipient,
            ),
        )

    def answer_from_memory(
        self, address: str, *, context: RecipientContext
    ) -> ResolvedRecipient | None | Literal[Miss.MISS]:
        """Abstain or refuse without I/O; ``MISS`` for a valid token (its object must be
        looked up)."""
        return None if _checked(address) is None else MISS


#: The validator to list in ``INBOUND_SMTP["RECIPIENT_VALIDATORS"]`` (first by default).
reply_address_validator = ReplyAddressValidator()

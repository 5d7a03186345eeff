"""Recipient definitions, stored messages, their recipients, attachments and
processing attempts.

Models stay declarative and query-only: the write path is ``delivery.py``, the
recipient policy is ``validators/``. No settings are read at class definition.
"""

from __future__ import annotations

from django_inbound_smtp.models.attachment import Attachment
from django_inbound_smtp.models.attempt import ProcessingAttempt
from django_inbound_smtp.models.bounce import BounceRecipient
from django_inbound_smtp.models.mailbox import (
    CATCH_ALL_LOCAL_PART,
    Mailbox,
    normalize_mailbox_address,
)
from django_inbound_smtp.models.message import InboundMessage, InboundRecipient, ReplyTrust
from django_inbound_smtp.models.retention import PendingFileDeletion
from django_inbound_smtp.models.return_path import ReturnPath
from django_inbound_smtp.models.sender_check import SenderCheck

__all__ = [
    "CATCH_ALL_LOCAL_PART",
    "Attachment",
    "BounceRecipient",
    "InboundMessage",
    "InboundRecipient",
    "Mailbox",
    "PendingFileDeletion",
    "ProcessingAttempt",
    "ReplyTrust",
    "ReturnPath",
    "SenderCheck",
    "normalize_mailbox_address",
]

"""What importing a message can come to: exit codes, refusals, faults, the tally."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["EXIT", "Refusal", "SourceError", "Summary", "TemporaryFault"]

#: sysexits.h codes: what the MTA does with each (Postfix pipe(8), Exim pipe transport).
EXIT = {
    "ok": 0,
    "usage": 64,  # EX_USAGE: the command line is wrong (bounced)
    "dataerr": 65,  # EX_DATAERR: the message cannot be taken (bounced)
    "noinput": 66,  # EX_NOINPUT: the mbox file or Maildir folder is not there
    "nouser": 67,  # EX_NOUSER: a recipient is not ours (bounced)
    "ioerr": 74,  # EX_IOERR: the import source could not be read
    "tempfail": 75,  # EX_TEMPFAIL: our fault, for now (the MTA retries)
}


class Refusal(Exception):
    """The message is refused for good (a 5xx over SMTP)."""

    def __init__(self, reason: str, detail: str, *, code: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.code = code


class TemporaryFault(Exception):
    """We cannot take the message now (database, storage): a 4xx over SMTP."""


class SourceError(Exception):
    """The mbox file or Maildir folder could not be read."""


@dataclass
class Summary:
    """What an import did, message by message."""

    stored: int = 0
    #: Stored as duplicates of a message stored before (a repeat within this run, or
    #: a pipe delivery the MTA retried): recorded, not processed.
    duplicates: int = 0
    #: Imported before (same bytes, Message-ID and envelope): skipped, nothing written.
    already: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    errors: int = 0

    @property
    def seen(self) -> int:
        return self.stored + self.duplicates + self.already + sum(self.refused.values())

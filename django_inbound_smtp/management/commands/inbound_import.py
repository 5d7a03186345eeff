"""``manage.py inbound_import``: one message from a pipe (Postfix, Exim), or the
messages of mbox files and Maildir folders, stored as if they had come over SMTP.

Exit codes are sysexits.h's, so an MTA's pipe transport does the right thing: 0
stored, 75 our temporary fault (the MTA retries), 67 a recipient is not ours, 65 an
unusable message, 64 a wrong command line; 66 and 74 for an import source that is
missing or unreadable. stderr says why in one line.
"""

from __future__ import annotations

import logging
import socket
import sys
from typing import Any, BinaryIO

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from django_inbound_smtp.conf import get_settings
from django_inbound_smtp.lifecycle import schedule
from django_inbound_smtp.management.importing.intake import Importer
from django_inbound_smtp.management.importing.outcomes import (
    EXIT,
    Refusal,
    SourceError,
    TemporaryFault,
)
from django_inbound_smtp.management.importing.progress import Progress, summary_lines
from django_inbound_smtp.management.importing.reading import (
    MaildirSource,
    MboxSource,
    Message,
    read_stream,
)

logger = logging.getLogger(__name__)


def _failed(text: str, code: str) -> CommandError:
    return CommandError(text, returncode=EXIT[code])


class Command(BaseCommand):
    help = (
        "Store one message from standard input ('-', with --sender and --recipient: for "
        "Postfix and Exim pipe transports), or import mbox files (--mbox) and Maildir "
        "folders (--maildir). Same recipient validators, limits, dedupe and processing "
        "as SMTP. Exit codes follow sysexits.h (75: temporary, retry; 67: unknown user)."
    )
    # A pipe delivery must be quick: smtpd and deployment run the checks.
    requires_system_checks: list[str] = []
    # For tests that feed standard input in-process (call_command(..., stdin=stream)).
    stealth_options = ("stdin",)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "source", nargs="?", choices=["-"], help="'-': one message from standard input"
        )
        parser.add_argument("--mbox", metavar="FILE", action="append", default=[])
        parser.add_argument("--maildir", metavar="DIR", action="append", default=[])
        parser.add_argument(
            "--sender", metavar="ADDR", help="envelope sender ('' or '<>': the null sender)"
        )
        parser.add_argument(
            "--recipient",
            metavar="ADDR",
            nargs="+",
            action="extend",
            default=[],
            help="envelope recipient(s); for an import, instead of the header's",
        )
        parser.add_argument(
            "--batch", type=int, default=100, help="messages stored per transaction (import)"
        )

    def run_from_argv(self, argv: list[str]) -> None:
        try:
            super().run_from_argv(argv)
        except SystemExit as done:
            if done.code == 2:  # argparse's usage error: EX_USAGE for an MTA
                raise SystemExit(EXIT["usage"]) from None
            raise

    def handle(self, *args: Any, **options: Any) -> None:
        imports = options["mbox"] or options["maildir"]
        if (options["source"] == "-") == bool(imports):
            raise _failed("give either '-' (standard input) or --mbox/--maildir", "usage")
        hostname = get_settings().HOSTNAME or socket.getfqdn()
        try:
            if options["source"] == "-":
                self._pipe(options, hostname)
            else:
                self._import(options, hostname)
        finally:
            connections.close_all()

    def _pipe(self, options: dict[str, Any], hostname: str) -> None:
        if options["sender"] is None or not options["recipient"]:
            raise _failed("standard input needs --sender and --recipient", "usage")
        stream: BinaryIO = options.get("stdin") or sys.stdin.buffer
        message = Message(chunks=read_stream(stream), label="standard input")
        importer = Importer(
            sender=options["sender"],
            recipients=options["recipient"],
            hostname=hostname,
            skip_known=False,
            via="pipe",
            batch_size=1,
        )
        try:
            importer.add(message)
        except Refusal as refusal:
            for _ in message.chunks:  # read it all: the MTA is still writing
                pass
            raise _failed(f"refused: {refusal.detail}", refusal.code) from None
        except (TemporaryFault, SourceError) as fault:
            raise _failed(f"temporary failure: {fault}; try again later", "tempfail") from None
        except Exception as error:
            logger.exception("inbound_import failed")
            detail = f"temporary failure ({type(error).__name__}); try again later"
            raise _failed(detail, "tempfail") from None
        self._finish_processing(get_settings().SHUTDOWN_GRACE)
        if options["verbosity"] > 1:
            self.stdout.write("stored" if importer.summary.stored else "stored as a duplicate")

    def _import(self, options: dict[str, Any], hostname: str) -> None:
        try:
            sources: list[MboxSource | MaildirSource] = [MboxSource(p) for p in options["mbox"]]
            sources += [MaildirSource(path) for path in options["maildir"]]
        except OSError as error:
            why = f"{error.filename}: {error.strerror}" if error.filename else str(error)
            raise _failed(f"cannot read {why}", "noinput") from None
        importer = Importer(
            sender=options["sender"],
            recipients=options["recipient"] or None,
            hostname=hostname,
            skip_known=True,
            via="import",
            batch_size=max(options["batch"], 1),
        )
        progress = Progress(self.stderr._out, tty=self.stderr.isatty())  # type: ignore[arg-type]
        try:
            for source in sources:
                for message in source:
                    try:
                        importer.add(message)
                    except Refusal as refusal:
                        if options["verbosity"] > 1:
                            self.stdout.write(f"{message.label}: refused: {refusal.detail}")
                    progress.update(source, importer.summary)
                importer.flush()
                progress.update(source, importer.summary, force=True)
        except (TemporaryFault, SourceError) as fault:
            progress.close()
            self._report(importer)
            code = "ioerr" if isinstance(fault, SourceError) else "tempfail"
            text = f"stopped: {fault}; run the same command again to resume"
            raise _failed(text, code) from None
        except OSError as error:  # reading the source (our own file errors are faults above)
            progress.close()
            self._report(importer)
            raise _failed(
                f"stopped: cannot read {error.filename}: {error.strerror}", "ioerr"
            ) from None
        except Exception as error:
            logger.exception("inbound_import failed")
            progress.close()
            self._report(importer)
            text = f"stopped ({type(error).__name__}); run the same command again to resume"
            raise _failed(text, "tempfail") from None
        progress.close()
        self._finish_processing(None)
        self._report(importer)
        if importer.summary.stored == 0 and importer.summary.seen:
            self.stdout.write("Nothing new: every message was stored before or refused.")

    def _report(self, importer: Importer) -> None:
        for line in summary_lines(importer.summary):
            self.stdout.write(line)

    def _finish_processing(self, timeout: float | None) -> None:
        # Inline processing runs in this process, Celery tasks are sent from a thread:
        # wait for both. What is left when time runs out stays "received" and is
        # scheduled by the sweeper (smtpd, inbound_dispatch or the beat task).
        if not schedule.drain(timeout):
            schedule.shutdown()

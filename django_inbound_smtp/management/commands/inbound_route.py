"""``manage.py inbound_route ADDRESS [--eml FILE]``: which route and handler a message to
ADDRESS would get, and why (see the README, *Routing*)."""

from __future__ import annotations

from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.core.management.base import BaseCommand, CommandError

from django_inbound_smtp import routing, validators
from django_inbound_smtp.conf import get_settings
from django_inbound_smtp.envelope import RecipientContext, ResolvedRecipient, SignedReference
from django_inbound_smtp.exceptions import Rejected, TemporaryFailure
from django_inbound_smtp.lifecycle.classify import own_hosts
from django_inbound_smtp.models import Mailbox
from django_inbound_smtp.parsing.kinds import classify
from django_inbound_smtp.parsing.mime import parse_message


def _mailbox(accepted: ResolvedRecipient) -> Mailbox | None:
    if accepted.mailbox_id is None:
        return None
    return Mailbox.objects.filter(pk=accepted.mailbox_id).first()


class Command(BaseCommand):
    help = (
        "Show which route and handler a message to ADDRESS would get, and why: the RCPT "
        "decision, then every route tried in order. --eml adds a message's headers."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("address", help="The recipient address, as in RCPT TO.")
        parser.add_argument("--eml", type=Path, help="A message file whose headers to route on.")
        parser.add_argument(
            "--sender", default="", help="MAIL FROM for the validators (default: <>)."
        )
        parser.add_argument(
            "--kind", help="The message's kind (regular, bounce, auto_reply, list, loop)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        address: str = options["address"]
        accepted = self._rcpt(address, sender=options["sender"])
        mailbox = _mailbox(accepted)
        headers: list[tuple[str, str]] = []
        kind = options["kind"]
        if options["eml"] is not None:
            try:
                raw = options["eml"].read_bytes()
            except OSError as error:
                raise CommandError(f"Cannot read {options['eml']}: {error.strerror}.") from error
            parsed = parse_message(raw)
            headers = [(name, decoded) for name, _raw, decoded in parsed.headers]
            if kind is None:  # what processing would decide (README, "Kinds of mail")
                found = classify(
                    parsed,
                    envelope_from=options["sender"],
                    own_hosts=own_hosts(parsed),
                    own_addresses=[address],
                    max_own_hops=get_settings().LOOP_MAX_OWN_HOPS,
                )
                kind = found.kind
                why = f" ({found.reason})" if found.reason else ""
                self.stdout.write(f"kind: {kind}{why}")
        decision = routing.explain(
            routing.Candidate(
                address=address,
                tag=accepted.tag,
                headers=headers,
                kind=kind,
                mailbox_address=mailbox.address if mailbox else None,
                mailbox_handler=mailbox.handler if mailbox else "",
            )
        )
        self._report(decision)

    def _rcpt(self, address: str, *, sender: str) -> ResolvedRecipient:
        context = RecipientContext(
            mail_from=sender, peer_host=None, helo="inbound_route", tls=False
        )
        try:
            accepted = validators.validate_recipient_here(address, context=context)
        except (Rejected, TemporaryFailure) as refusal:
            raise CommandError(f"{address}: refused at RCPT: {refusal.reply}") from refusal
        mailbox = _mailbox(accepted)
        where = f"mailbox {mailbox.address}" if mailbox else "a validator (no mailbox)"
        if accepted.signed is not None:  # reply_addresses
            where = _signed(accepted.signed)
        tag = f", tag {accepted.tag!r}" if accepted.tag else ""
        self.stdout.write(f"{address}: accepted at RCPT by {where}{tag}")
        return accepted

    def _report(self, decision: routing.Decision) -> None:
        if not decision.trace:
            self.stdout.write("  no routes configured, and the mailbox names no handler")
        for position, (name, matched, reasons) in enumerate(decision.trace, start=1):
            verdict = "MATCH" if matched else "no"
            self.stdout.write(f"  {position}. {name}: {verdict}: {'; '.join(reasons)}")
        route = decision.route
        if route is None:
            self.stdout.write("=> no route: the message_received signal only")
            return
        kind = "callable" if routing.resolve_handler(route.handler) is not None else "Celery task"
        self.stdout.write(f"=> route {route.name}: handler {route.handler} ({kind})")


def _signed(signed: SignedReference) -> str:
    model = ContentType.objects.get_for_id(signed.content_type_id).model_class()
    label = model._meta.label if model is not None else "?"
    if signed.bounce_recipient:
        return f"a signed return path for {signed.bounce_recipient}"
    user = f", issued to user #{signed.user_id}" if signed.user_id else ""
    return f"a signed reply address for {label} #{signed.object_id}{user}"

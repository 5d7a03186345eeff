"""Notify: the ``message_received`` signal, ``message_bounced`` for a bounce, then each
recipient's route's handler.

The only place ``message_received`` and ``message_bounced`` are sent. Routes take only
the kinds of mail their handlers handle (``routing``, ``kinds.handles``): by default
regular and list mail; a loop reaches no handler. Every receiver and handler error is
logged and returned (the message becomes ``failed`` with the tracebacks); none
escapes, and none can change the SMTP outcome, which was decided long before.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

from django.db import DatabaseError

from django_inbound_smtp import routing
from django_inbound_smtp.lifecycle.backends import send_celery_task
from django_inbound_smtp.lifecycle.reply_trust import assess
from django_inbound_smtp.models import InboundMessage, InboundRecipient
from django_inbound_smtp.signals import message_bounced, message_received
from django_inbound_smtp.store.rows import envelope_of

__all__ = ["notify"]

logger = logging.getLogger(__name__)


@functools.cache
def _takes_route(handler: Callable[..., Any]) -> bool:
    # Handlers written before routes take (message, mailbox, recipients) only.
    try:
        parameters = inspect.signature(handler).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.kind is p.VAR_KEYWORD or p.name == "route" for p in parameters)


def _route_all(
    message: InboundMessage, recipients: list[InboundRecipient]
) -> dict[routing.Route, list[InboundRecipient]]:
    """Each recipient's route (``routing.explain``), its name stored on the row; the
    recipients grouped by route."""
    headers = [(name, decoded) for name, _raw, decoded in message.headers or ()]
    kind = getattr(message, "kind", None) or None
    groups: dict[routing.Route, list[InboundRecipient]] = {}
    renamed: dict[str, list[int]] = {}
    for recipient in recipients:
        mailbox = recipient.mailbox
        decision = routing.explain(
            routing.Candidate(
                address=recipient.address,
                tag=recipient.tag,
                headers=headers,
                kind=kind,
                mailbox_address=mailbox.address if mailbox else None,
                mailbox_handler=mailbox.handler if mailbox else "",
            )
        )
        name = decision.route.name if decision.route else ""
        if decision.route is not None:
            groups.setdefault(decision.route, []).append(recipient)
        if recipient.route != name:
            recipient.route = name
            renamed.setdefault(name, []).append(recipient.pk)
    for name, pks in renamed.items():  # nothing to write when nothing is routed
        InboundRecipient.objects.filter(pk__in=pks).update(route=name)
    return groups


def _run_handlers(
    message: InboundMessage, recipients: list[InboundRecipient]
) -> list[BaseException]:
    errors: list[BaseException] = []
    try:
        routed = _route_all(message, recipients)
    except DatabaseError:
        raise  # as every database error: the claim expires and the batch is retried
    except Exception as error:
        # A broken ROUTES entry (E055, in a process that ran no checks): the message
        # fails with it once. Escaping here, after the receivers ran, would have them
        # run again at every retry.
        logger.error("routing failed for %s", message.queue_id, exc_info=error)
        return [error]
    for route, mine in routed.items():
        mailboxes = {r.mailbox_id for r in mine}
        mailbox = mine[0].mailbox if len(mailboxes) == 1 else None
        try:
            handler = routing.resolve_handler(route.handler)
            if handler is not None:
                extra = {"route": route} if _takes_route(handler) else {}
                handler(message=message, mailbox=mailbox, recipients=mine, **extra)
            else:
                # Only a task the project's Celery app knows: a typo in a dotted path
                # must fail the message visibly, not vanish into a queue. A mailbox's
                # task keeps its two arguments; a configured route's names itself.
                args: list[Any] = [message.pk, mailbox.pk if mailbox else None]
                if not route.name.startswith("mailbox:"):
                    args.append(route.name)
                send_celery_task(route.handler, args, known_only=True)
        except Exception as error:
            logger.error(
                "handler %s of route %s failed for %s",
                route.handler,
                route.name,
                message.queue_id,
                exc_info=error,
            )
            errors.append(error)
    return errors


def notify(message: InboundMessage) -> list[BaseException]:
    """Send ``message_received`` for ``message`` and run its mailboxes' handlers;
    the errors they raised (empty: all went well)."""
    # Prefetched for the whole batch by the claim (one query); else read now.
    recipients = sorted(message.recipients.all(), key=lambda row: row.pk)
    mailboxes = list({r.mailbox_id: r.mailbox for r in recipients if r.mailbox}.values())
    # Signed reply addresses: may this reply act as the user it was issued to?
    assess(message, recipients)
    responses = message_received.send_robust(
        sender=InboundMessage,
        message=message,
        recipients=recipients,
        mailboxes=mailboxes,
        envelope=envelope_of(message, recipients),
    )
    errors = _failures("message_received", responses, message)
    if message.kind == InboundMessage.Kind.BOUNCE:
        errors += _bounced(message, recipients)
    return errors + _run_handlers(message, recipients)


def _bounced(message: InboundMessage, envelope: list[InboundRecipient]) -> list[BaseException]:
    rows = list(message.bounce_recipients.all())
    responses = message_bounced.send_robust(
        sender=InboundMessage,
        message=message,
        recipients=rows,
        failed=[row.recipient for row in rows if row.action == row.Action.FAILED],
        original_message_id=rows[0].original_message_id if rows else "",
        # Signed return paths (VERP) it came to: who the bounced mail was sent to, by
        # our own signature, whatever address the report names.
        return_path_recipients=[r.bounce_recipient for r in envelope if r.bounce_recipient],
    )
    return _failures("message_bounced", responses, message)


def _failures(
    signal: str, responses: list[tuple[Any, Any]], message: InboundMessage
) -> list[BaseException]:
    errors: list[BaseException] = []
    for receiver, error in responses:
        if isinstance(error, Exception):
            logger.error(
                "%s receiver %r failed for %s",
                signal,
                receiver,
                message.queue_id,
                exc_info=error,
            )
            errors.append(error)
    return errors

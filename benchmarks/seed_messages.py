#!/usr/bin/env python
"""Fill a database with realistic stored messages, fast: ``seed_messages.py --count 100000``.

For the admin's speed at production size (``admin_speed.py``). No SMTP: each message is
built as MIME bytes, parsed by the app's own parser (so headers, addresses, bodies and
attachment rows are exactly what processing stores), its raw file written under the
usual ``<prefix>/YYYY/MM/DD/<queue id>.eml`` name (plain writes, no fsync: it is seed
data), and the rows are inserted with ``bulk_create`` in batches. Attachment rows point
at a handful of shared files (same bytes, same SHA-256), written once.

What the rows look like: subjects and bodies in English, German, French, Spanish and
Russian from small vocabularies (word frequencies skewed, so common words match
thousands of messages and order numbers match one), one message in five HTML with a
text alternative, one in twenty HTML only; 1-3 recipients among 24 mailboxes on three
domains; one in seven with 1-2 attachments; received over the last 365 days, inserted
oldest first; statuses 90% processed, 6% failed (with a traceback), 4% received; a
sender-check row per message (SPF, DKIM, DMARC, reverse DNS, DNSBL verdicts mixed), as
with the default ``SENDER_CHECKS``.

Uses the benchmark project (``bench_project/settings.py``): PostgreSQL database
``BENCH_PG_NAME`` (default here ``inbound_admin_bench``; dropped and created again with
``--reset``), raw files under ``BENCH_MEDIA_ROOT`` (default a folder in the system's
temporary folder). ``BENCH_DB=sqlite`` seeds a SQLite file instead.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import sys
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench_project.admin_settings")
os.environ.setdefault("BENCH_PG_NAME", "inbound_admin_bench")

WORDS = {
    "en": (
        "the of and to in is for that on with as this you it be are from at by your we "
        "invoice order payment meeting report account shipment delivery please attached "
        "thanks regards team project update schedule review contract customer support "
        "ticket password reset quarterly budget release server outage renewal welcome"
    ).split(),
    "de": (
        "der die und in den von zu das mit sich des auf für ist im dem nicht ein eine "
        "Rechnung Bestellung Zahlung Besprechung Bericht Lieferung bitte Anhang danke "
        "Grüße Kunde Vertrag Termin Köln München Straße Größe Übersicht Änderung"
    ).split(),
    "fr": (
        "de la le et les des en un du une que est pour qui dans par sur pas plus "
        "facture commande paiement réunion rapport livraison merci cordialement "
        "équipe client contrat échéance été déjà prévu reçu année"
    ).split(),
    "es": (
        "de la que el en y los del se las por un para con una su al lo como más "
        "factura pedido pago reunión informe entrega gracias saludos equipo cliente "
        "contrato año señor mañana envío"
    ).split(),
    "ru": (
        "и в не на я что он с как а то все она так его но да ты к у же вы за бы "
        "счёт заказ оплата встреча отчёт доставка спасибо команда клиент договор"
    ).split(),
}
SUBJECTS = {
    "en": [
        "Invoice {n} for {month}",
        "Re: meeting on {day}",
        "Your order {n} has shipped",
        "Password reset request",
        "Quarterly report {month}",
        "Ticket #{n}: server outage",
        "Welcome to the team",
        "Fwd: contract renewal {n}",
    ],
    "de": [
        "Rechnung {n} für {month}",
        "AW: Besprechung am {day}",
        "Ihre Bestellung {n}",
        "Grüße aus Köln",
        "Lieferung {n} unterwegs",
    ],
    "fr": [
        "Facture n°{n} — {month}",
        "RE: réunion du {day}",
        "Votre commande {n}",
        "Rapport trimestriel",
    ],
    "es": ["Factura {n} de {month}", "RE: reunión del {day}", "Su pedido {n} fue enviado"],
    "ru": ["Счёт {n} за {month}", "Заказ {n} отправлен", "Встреча {day}"],
}
LANGUAGES = ["en"] * 6 + ["de"] * 2 + ["fr", "es", "ru"]
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
DOMAINS = ["example.org", "shop.example.org", "support.example.net"]
LOCALS = ["info", "sales", "support", "billing", "jobs", "alice", "bob", "noreply"]
SENDERS = [
    "orders@vendor.test",
    "billing@acme.test",
    "no-reply@bank.test",
    "alerts@monitor.test",
    "hans.mueller@firma.test",
    "marie@societe.test",
    "ivan@kompania.test",
    "news@letters.test",
]
ATTACHMENTS = [
    ("invoice.pdf", "application/pdf"),
    ("photo.jpg", "image/jpeg"),
    ("report.xlsx", "application/vnd.ms-excel"),
    ("notes.txt", "text/plain"),
]
ERROR = (
    'Traceback (most recent call last):\n  File "receivers.py", line 12, in on_mail\n'
    '    raise ValueError("no ticket for this sender")\nValueError: no ticket'
)


def _text(rng: random.Random, language: str, order: int) -> str:
    words = WORDS[language]
    # Zipf-like: early words of each list are far more frequent.
    weights = [1 / (rank + 1) for rank in range(len(words))]
    count = rng.randint(30, 400)
    body = rng.choices(words, weights=weights, k=count)
    body.insert(rng.randrange(len(body)), f"ORD{order:07d}")
    lines = [" ".join(body[i : i + 12]) for i in range(0, len(body), 12)]
    return "\n".join(lines) + "\n"


def _raw(rng: random.Random, index: int, when: datetime, to: list[str]) -> tuple[bytes, bool]:
    language = rng.choice(LANGUAGES)
    subject = rng.choice(SUBJECTS[language]).format(
        n=rng.randint(1000, 99999), month=rng.choice(MONTHS), day=when.strftime("%d.%m.")
    )
    message = EmailMessage()
    message["From"] = rng.choice(SENDERS)
    message["To"] = ", ".join(to)
    message["Subject"] = subject
    message["Date"] = format_datetime(when)
    message["Message-ID"] = f"<{secrets.token_hex(10)}.{index}@mail.sender.test>"
    text = _text(rng, language, index)
    shape = rng.random()
    if shape < 0.05:  # HTML only
        message.set_content(f"<html><body><p>{text}</p></body></html>", subtype="html")
    else:
        message.set_content(text)
        if shape < 0.25:
            message.add_alternative(f"<html><body><p>{text}</p></body></html>", subtype="html")
    attached = rng.random() < 1 / 7
    if attached:
        for filename, content_type in rng.sample(ATTACHMENTS, rng.randint(1, 2)):
            main, sub = content_type.split("/")
            message.add_attachment(b"x" * 512, maintype=main, subtype=sub, filename=filename)
    return message.as_bytes(), attached


def _setup(*, reset: bool) -> None:
    import django
    from django.conf import settings

    if reset and settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        import psycopg

        db = settings.DATABASES["default"]
        with psycopg.connect(
            host=db["HOST"], port=db["PORT"], user=db["USER"], dbname="postgres", autocommit=True
        ) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{db["NAME"]}"')
            admin.execute(f'CREATE DATABASE "{db["NAME"]}"')
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def seed(count: int, *, batch: int, seed_value: int) -> dict[str, Any]:
    from django.core.files.base import ContentFile
    from django.db import transaction

    from django_inbound_smtp.lifecycle.extract import _fields
    from django_inbound_smtp.models import Attachment, InboundMessage, InboundRecipient, Mailbox
    from django_inbound_smtp.parsing.mime import parse_message
    from django_inbound_smtp.store.files import inbound_storage

    rng = random.Random(seed_value)
    storage = inbound_storage()
    mailboxes = [
        Mailbox.objects.get_or_create(address=f"{local}@{domain}")[0]
        for domain in DOMAINS
        for local in LOCALS
    ]
    shared = {
        name: storage.save(f"inbound_smtp/attachments/seed/{name}", ContentFile(b"x" * 512))
        for name, _type in ATTACHMENTS
    }
    now = datetime.now(UTC)
    # Oldest first, as mail arrives: ids and the heap follow received_at, as in a real
    # table (random dates would scatter each day's rows over the whole table).
    ages = sorted((rng.randint(0, 365 * 86400) for _ in range(count)), reverse=True)
    started = time.monotonic()
    made = 0
    while made < count:
        rows: list[tuple[InboundMessage, list[InboundRecipient], list[Attachment]]] = []
        for index in range(made, min(count, made + batch)):
            when = now - timedelta(seconds=ages[index])
            chosen = rng.sample(mailboxes, rng.randint(1, 3))
            to = [m.address for m in chosen]
            raw, _attached = _raw(rng, index, when, to)
            queue_id = secrets.token_hex(8).upper()
            name = f"inbound_smtp/{when:%Y/%m/%d}/{queue_id}.eml"
            path = Path(storage.path(name))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(raw)
            parsed = parse_message(raw)
            status = rng.choices(["processed", "failed", "received"], weights=[90, 6, 4])[0]
            message = InboundMessage(
                queue_id=queue_id,
                status=status,
                envelope_from=parsed.from_[0][1],
                peer_ip=f"192.0.2.{rng.randint(1, 254)}",
                peer_port=rng.randint(1024, 65535),
                helo="client.sender.test",
                tls=rng.random() < 0.8,
                size=len(raw),
                received_at=when,
                raw_file=name,
                message_id=parsed.message_id,
                subject=parsed.subject,
                from_header=parsed.from_[0][1],
                date_header=parsed.date,
                dedupe_key=secrets.token_hex(32),
                parsed_at=when,
                attempts=1,
                processed_at=None if status == "received" else when,
                error=ERROR if status == "failed" else "",
                **_fields(parsed),
            )
            recipients = [
                InboundRecipient(message=message, mailbox=m, address=m.address) for m in chosen
            ]
            attachments = [
                Attachment(
                    message=message,
                    position=position,
                    filename=part.filename,
                    file=shared[part.filename],
                    content_type=part.content_type,
                    size=part.size,
                    sha256=part.sha256,
                    content_id=part.content_id,
                    inline=part.inline,
                )
                for position, part in enumerate(parsed.attachments)
            ]
            rows.append((message, recipients, attachments))
        with transaction.atomic():
            InboundMessage.objects.bulk_create([m for m, _r, _a in rows])
            for message, recipients, attachments in rows:
                for row in (*recipients, *attachments):
                    row.message_id = message.pk
            InboundRecipient.objects.bulk_create([r for _m, rs, _a in rows for r in rs])
            Attachment.objects.bulk_create([a for _m, _r, atts in rows for a in atts])
        made += len(rows)
        print(f"\r{made}/{count} messages, {time.monotonic() - started:.0f} s", end="", flush=True)
    print()
    return {"messages": made, "seconds": round(time.monotonic() - started, 1)}


VERDICTS = {
    "spf_result": (("pass", 70), ("softfail", 10), ("fail", 5), ("none", 15)),
    "dkim_result": (("pass", 60), ("none", 30), ("fail", 10)),
    "dmarc_result": (("pass", 55), ("fail", 10), ("none", 35)),
    "iprev_result": (("pass", 80), ("fail", 15), ("temperror", 5)),
    "dnsbl_result": (("pass", 95), ("fail", 5)),
}


def sender_checks(*, batch: int, seed_value: int) -> int:
    """A sender-check row for every message without one (checks are on by default)."""
    from django.db import transaction

    from django_inbound_smtp.models import InboundMessage, SenderCheck

    rng = random.Random(seed_value)
    made = 0
    while True:
        missing = list(
            InboundMessage.objects.filter(sender_check__isnull=True)
            .order_by("pk")
            .values_list("pk", "from_header")[:batch]
        )
        if not missing:
            return made
        rows = []
        for pk, sender in missing:
            verdicts = {
                field: rng.choices([w for w, _n in choices], [n for _w, n in choices])[0]
                for field, choices in VERDICTS.items()
            }
            domain = sender.rpartition("@")[2]
            rows.append(
                SenderCheck(
                    message_id=pk,
                    sender_verified=verdicts["dmarc_result"] == "pass",
                    from_domain=domain,
                    authentication_results=(
                        f"mx.bench; spf={verdicts['spf_result']} smtp.mailfrom={domain}; "
                        f"dkim={verdicts['dkim_result']} header.d={domain}; "
                        f"dmarc={verdicts['dmarc_result']} header.from={domain}"
                    ),
                    **verdicts,
                )
            )
        with transaction.atomic():
            SenderCheck.objects.bulk_create(rows)
        made += len(rows)


def analyze() -> None:
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--count", type=int, default=100_000, help="messages to add (0: sender checks only)"
    )
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1, help="random seed (same rows each run)")
    parser.add_argument("--reset", action="store_true", help="drop and create the database")
    args = parser.parse_args()
    _setup(reset=args.reset)
    if args.count:
        print(seed(args.count, batch=args.batch, seed_value=args.seed))
    print({"sender_checks": sender_checks(batch=5000, seed_value=args.seed)})
    analyze()


if __name__ == "__main__":
    main()

"""``manage.py inbound_dns_check [DOMAIN ...] [--ip IP ...]``: the MX doctor.

For each served domain: its MX records and whether they reach this host, its SPF and
DMARC records; then the reverse DNS of this host. Exits non-zero on problems, so it
can run as a deployment check.
"""

from __future__ import annotations

import asyncio
import socket
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from django_inbound_smtp.conf import get_settings
from django_inbound_smtp.models import Mailbox
from django_inbound_smtp.senderauth import doctor
from django_inbound_smtp.senderauth.resolver import Resolver, TemporaryDnsError

_MARKS = {"ok": " ", "warning": "!", "error": "X"}


class Command(BaseCommand):
    help = (
        "Check the DNS of the domains this server receives mail for: MX (does it reach this "
        "host?), SPF, DMARC, and this host's reverse DNS, with advice. Exits 1 on errors "
        "(and on warnings with --strict)."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("domains", nargs="*", help="Default: every domain with a mailbox.")
        parser.add_argument(
            "--ip",
            action="append",
            default=[],
            help="This host's public address (repeatable). Default: the A/AAAA of HOSTNAME.",
        )
        parser.add_argument("--hostname", help="This host's name. Default: HOSTNAME or the FQDN.")
        parser.add_argument("--strict", action="store_true", help="Warnings fail too.")

    def handle(self, *args: Any, **options: Any) -> None:
        settings = get_settings()
        host = (options["hostname"] or settings.HOSTNAME or socket.getfqdn()).rstrip(".")
        domains = options["domains"] or sorted(
            set(Mailbox.objects.filter(is_active=True).values_list("domain", flat=True))
        )
        if not domains:
            raise CommandError("No domain given and no mailbox defined.")
        reports = asyncio.run(self._check(domains, host, list(options["ip"])))
        errors = sum(report.errors for report in reports)
        warnings = sum(report.warnings for report in reports)
        for report in reports:
            self.stdout.write(report.subject)
            for finding in report.findings:
                line = f"  {_MARKS[finding.level]} {finding.topic:<6} {finding.text}"
                style = {"error": self.style.ERROR, "warning": self.style.WARNING}
                self.stdout.write(style.get(finding.level, str)(line))
        summary = f"{errors} error(s), {warnings} warning(s)."
        if errors or (warnings and options["strict"]):
            raise CommandError(summary)
        self.stdout.write(self.style.SUCCESS(summary))

    async def _check(self, domains: list[str], host: str, ips: list[str]) -> list[doctor.Report]:
        dns = get_settings().DNS
        resolver = Resolver(nameservers=dns.nameservers, timeout=dns.timeout, cache_size=1000)
        ours = ips
        if not ours:
            try:
                ours = list(await resolver.addresses(host))
            except TemporaryDnsError:
                ours = []
        reports = [await doctor.check_domain(resolver, d, ours=ours, host=host) for d in domains]
        reports.append(await doctor.check_host(resolver, host=host, ours=ours))
        return reports

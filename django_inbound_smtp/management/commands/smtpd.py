"""``manage.py smtpd [ADDR:PORT]``: run the inbound SMTP listener (``runserver``-shaped)."""

from __future__ import annotations

import asyncio
import errno
import logging
import re
import sys
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from django_inbound_smtp import _db
from django_inbound_smtp.conf import get_settings
from django_inbound_smtp.smtp.server import InboundServer, run_server

_ADDRPORT = re.compile(r"^(?:\[(?P<ipv6>[^\]]+)\]|(?P<host>[^:\[\]]*)):(?P<port>\d+)$")


def parse_addrport(value: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or a bare ``PORT`` (on 127.0.0.1) to ``(host, port)``."""
    if value.isdigit():
        return "127.0.0.1", int(value)
    match = _ADDRPORT.match(value)
    if not match or int(match["port"]) > 65535:
        raise CommandError(f"{value!r} is not a valid address:port (e.g. 127.0.0.1:8025).")
    host = match["ipv6"] or match["host"] or "127.0.0.1"
    return host, int(match["port"])


class Command(BaseCommand):
    help = "Run the inbound SMTP server: accepts mail for your mailboxes and stores it."

    # Checks run explicitly in handle(), like runserver, so they also run before serving.
    requires_system_checks: list[str] = []
    requires_migrations_checks = False

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "addrport",
            nargs="?",
            help="HOST:PORT to listen on (default: INBOUND_SMTP['BIND']; port 0 picks a free one).",
        )
        parser.add_argument("--hostname", help="Name used in the greeting and Received: lines.")
        parser.add_argument("--skip-checks", action="store_true", help="Skip the system checks.")
        parser.add_argument(
            "--tls-cert", help="PEM certificate chain for STARTTLS (overrides TLS_CERTFILE)."
        )
        parser.add_argument(
            "--tls-key", help="PEM private key for STARTTLS (overrides TLS_KEYFILE)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        host, port = parse_addrport(options["addrport"] or get_settings().BIND)
        if options["verbosity"] > 1:
            logging.getLogger("django_inbound_smtp").setLevel(logging.DEBUG)
        if not options["skip_checks"]:
            self.stdout.write("Performing system checks...")
            self.check(display_num_errors=True)
        self.check_migrations()
        # The checks opened connections in this thread; the server does its database
        # work in another one.
        connections.close_all()
        # A daemon: connections stay open while usable, whatever CONN_MAX_AGE says.
        _db.keep_connections_open()

        if bool(options["tls_cert"]) != bool(options["tls_key"]):
            raise CommandError("--tls-cert and --tls-key go together.")

        def ready(server: InboundServer, bound_host: str, bound_port: int) -> None:
            lines = [f"Inbound SMTP server listening on {_shown(bound_host, bound_port)}"]
            if server.tls.context() is not None:
                lines[0] += " (STARTTLS offered)"
            if server.tls_address is not None:
                lines.append(f"Implicit TLS listening on {_shown(*server.tls_address)}")
            lines.append("Quit with CONTROL-C.")
            self.stdout.write("\n".join(lines))
            self.stdout.flush()

        try:
            asyncio.run(
                run_server(
                    host,
                    port,
                    hostname=options["hostname"],
                    tls_certfile=options["tls_cert"],
                    tls_keyfile=options["tls_key"],
                    on_ready=ready,
                )
            )
        except OSError as error:
            raise CommandError(_bind_error(host, port, error)) from error
        self.stdout.write("Inbound SMTP server stopped.")
        sys.stdout.flush()


def _shown(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bind_error(host: str, port: int, error: OSError) -> str:
    if error.errno == errno.EACCES:
        return (
            f"Permission denied binding {host}:{port}. Ports below 1024 need privileges: "
            "listen on a high port behind a redirect (e.g. 25 -> 2525), or grant "
            "CAP_NET_BIND_SERVICE."
        )
    if error.errno == errno.EADDRINUSE:
        return f"{host}:{port} is already in use by another process."
    if error.errno == errno.EADDRNOTAVAIL:
        return f"{host} is not an address of this machine."
    return f"Cannot listen on {host}:{port}: {error.strerror or error}."

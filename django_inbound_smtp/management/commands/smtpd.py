"""``manage.py smtpd [ADDR:PORT]``: run the inbound SMTP listener (``runserver``-shaped)."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
from argparse import SUPPRESS, ArgumentParser, ArgumentTypeError
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, connections

from django_inbound_smtp import _db, metrics
from django_inbound_smtp.conf import get_settings
from django_inbound_smtp.management.commands._monitor import (
    Monitor,
    bind_error,
    forget_worker,
    metrics_bind,
    parse_addrport,
)
from django_inbound_smtp.smtp import listeners, workers
from django_inbound_smtp.smtp._worker import ParentChannel, label_logs
from django_inbound_smtp.smtp.server import InboundServer, run_server, split_bind

__all__ = ["Command", "parse_addrport"]


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
        parser.add_argument(
            "--workers",
            type=_worker_count,
            default=1,
            help="Worker processes sharing the port (SO_REUSEPORT, Linux); 'auto' is one "
            "per core. Default 1: this process serves.",
        )
        parser.add_argument(
            "--user",
            help="Start as root, bind the listeners, then run as this user (and drop root "
            "for good) before any mail or database work.",
        )
        parser.add_argument(
            "--group", help="With --user: the group to run as (default: the user's own)."
        )
        parser.add_argument(
            "--metrics",
            metavar="ADDR:PORT",
            help="Serve /metrics (Prometheus), /healthz and /readyz over HTTP there "
            "(default: INBOUND_SMTP['METRICS_BIND']; needs prometheus-client).",
        )
        parser.add_argument(
            "--lmtp",
            action="store_true",
            help="Speak LMTP (RFC 2033) instead of SMTP on ADDR:PORT: for an MTA in front "
            "(Postfix's lmtp: transport); one reply per recipient after DATA.",
        )
        parser.add_argument(
            "--lmtp-socket",
            metavar="PATH",
            help="Also serve LMTP on a UNIX socket at PATH (one process: not with --workers).",
        )
        # Internal: how the parent of `--workers N` starts each worker.
        for internal in ("--worker-index", "--worker-channel"):
            parser.add_argument(internal, type=int, help=SUPPRESS)
        for internal in ("--tls-bind", "--submission-bind", "--metrics-dir"):
            parser.add_argument(internal, help=SUPPRESS)

    def handle(self, *args: Any, **options: Any) -> None:
        host, port = parse_addrport(options["addrport"] or get_settings().BIND)
        if options["verbosity"] > 1:
            logging.getLogger("django_inbound_smtp").setLevel(logging.DEBUG)
        if bool(options["tls_cert"]) != bool(options["tls_key"]):
            raise CommandError("--tls-cert and --tls-key go together.")
        if options["lmtp_socket"] and options["workers"] > 1:
            raise CommandError(
                "--lmtp-socket serves from one process; with --workers use --lmtp on a TCP port."
            )
        if options["worker_index"] is not None:
            self._serve_as_worker(host, port, options)  # its parent ran the checks
            return
        if options["user"] or options["group"]:
            try:  # before any work: a wrong name or a non-root start fails at once
                listeners.resolve_identity(options["user"], options["group"])
            except listeners.ListenerError as error:
                raise CommandError(str(error)) from error
        # Sockets from systemd (LISTEN_FDS), taken before anything else can inherit them.
        try:
            options["listeners"] = listeners.from_systemd()
        except listeners.ListenerError as error:
            raise CommandError(str(error)) from error
        if options["listeners"] is not None and options["workers"] > 1:
            raise CommandError(
                "--workers cannot share sockets passed by systemd yet: run one smtpd per "
                "socket unit, or let --workers bind the port itself."
            )
        options["metrics_bind"] = metrics_bind(options["metrics"])
        dropping = bool(options["user"] or options["group"])
        if not options["skip_checks"]:
            self.stdout.write("Performing system checks...")
            # The database checks too (mailbox handlers naming nothing, E056), but not
            # as root before a drop (see below).
            self.check(display_num_errors=True, databases=[] if dropping else [DEFAULT_DB_ALIAS])
        if not dropping:
            # Not as root before the drop: a connection opened as root fails where the
            # database authenticates the process's user (PostgreSQL peer auth) and
            # breaks the promise of no database work before the drop.
            self.check_migrations()
        # The checks opened connections in this thread; the server does its database
        # work in another one (or in other processes).
        connections.close_all()

        if options["workers"] > 1:
            self._supervise(host, port, options)
        else:
            self._serve(host, port, options)
        self.stdout.write("Inbound SMTP server stopped.")
        sys.stdout.flush()

    def _serve(self, host: str, port: int, options: dict[str, Any]) -> None:
        serving: list[InboundServer] = []

        def ready(server: InboundServer, bound_host: str, bound_port: int) -> None:
            serving.append(server)
            self._monitor.smtp_serving()
            self._banner(
                bound_host,
                bound_port,
                starttls=server.tls.context() is not None and not server.lmtp,
                tls_address=server.tls_address,
                lmtp=server.lmtp,
                lmtp_socket=server.lmtp_socket,
            )

        def state() -> tuple[bool, str]:
            if not serving:
                return False, "starting"
            if serving[0].handler.draining:
                return False, "stopping: no new transactions"
            return True, "serving"

        if options["metrics_bind"] is not None:
            metrics.enable()
        self._monitor = Monitor(options["metrics_bind"], state)
        _run(host, port, options, on_ready=ready, monitor=self._monitor)

    def _banner(
        self,
        host: str,
        port: int,
        *,
        starttls: bool,
        tls_address: tuple[str, int] | None,
        pids: list[int] | None = None,
        lmtp: bool = False,
        lmtp_socket: str | None = None,
    ) -> None:
        notes = ["STARTTLS offered"] if starttls else []
        if pids:
            notes.append(f"{len(pids)} workers")
        protocol = "LMTP" if lmtp else "SMTP"
        lines = [f"Inbound {protocol} server listening on {_shown(host, port)}"]
        if notes:
            lines[0] += f" ({', '.join(notes)})"
        if pids:
            lines.append(f"Worker pids: {', '.join(map(str, pids))}")
        if tls_address is not None:
            lines.append(f"Implicit TLS listening on {_shown(*tls_address)}")
        monitor: Monitor | None = getattr(self, "_monitor", None)
        if monitor is not None and monitor.address is not None:
            lines.append(
                f"Metrics and health on http://{_shown(*monitor.address)}/ "
                "(/metrics, /healthz, /readyz)"
            )
        if lmtp_socket:
            lines.append(f"LMTP listening on UNIX socket {lmtp_socket}")
        lines.append("Quit with CONTROL-C.")
        self.stdout.write("\n".join(lines))
        self.stdout.flush()

    def _supervise(self, host: str, port: int, options: dict[str, Any]) -> None:
        if not hasattr(socket, "SO_REUSEPORT"):
            raise CommandError("--workers needs SO_REUSEPORT, which this system lacks.")
        if threading.current_thread() is not threading.main_thread():
            # The parent's whole job hangs on signals, which only the main thread gets.
            raise CommandError("--workers needs the main thread (it handles the signals).")
        reserved: list[socket.socket] = []
        folder = None
        try:
            port = _reserve(reserved, host, port)
            binds = {
                name: _reserve_bind(reserved, value)
                for name, value in (
                    ("--tls-bind", get_settings().TLS_BIND),
                    ("--submission-bind", get_settings().SUBMISSION_BIND),
                )
                if value
            }
            entry = workers.entry_point("smtpd")
            passed = [
                (flag, options[key])
                for flag, key in (
                    ("--hostname", "hostname"),
                    ("--tls-cert", "tls_cert"),
                    ("--tls-key", "tls_key"),
                    ("--pythonpath", "pythonpath"),
                    # Each worker binds as root (SO_REUSEPORT), then drops privileges;
                    # the supervisor does no mail work and stays root to restart them.
                    ("--user", "user"),
                    ("--group", "group"),
                )
                if options.get(key)
            ] + list(binds.items())
            # Metrics: each worker writes its values to files in a fresh folder, this
            # process sums them when scraped (prometheus-client's multiprocess mode).
            if options["metrics_bind"] is not None:
                folder = tempfile.mkdtemp(prefix="inbound-smtp-metrics-")
                if options.get("user") or options.get("group"):
                    os.chown(folder, *listeners.resolve_identity(options["user"], options["group"]))
                passed.append(("--metrics-dir", folder))

            def command(index: int, channel: int) -> list[str]:
                args = [*entry, "smtpd", _shown(host, port)]
                args += ["--worker-index", str(index), "--worker-channel", str(channel)]
                args += ["--verbosity", str(options["verbosity"])]
                args += ["--lmtp"] if options["lmtp"] else []
                return args + [part for pair in passed for part in pair]

            def ready(started: list[workers.Worker]) -> None:
                self._monitor.smtp_serving()
                report = started[0].report
                tls_address = report["tls_address"]
                self._banner(
                    *report["address"],
                    starttls=report["starttls"],
                    tls_address=tuple(tls_address) if tls_address else None,
                    pids=[worker.pid for worker in started],
                    lmtp=options["lmtp"],
                )

            # The settings module as this process resolved it (--settings included).
            env = {**os.environ, "DJANGO_SETTINGS_MODULE": settings.SETTINGS_MODULE}
            if folder is not None:
                # Read by prometheus-client when a worker first imports it.
                env["PROMETHEUS_MULTIPROC_DIR"] = folder
            supervisor = workers.Supervisor(
                count=options["workers"],
                command=command,
                env=env,
                on_exit=None if folder is None else forget_worker(folder),
            )
            self._monitor = Monitor(
                options["metrics_bind"], supervisor.state, multiprocess_dir=folder
            )
            try:
                asyncio.run(self._monitor.around(supervisor.run(ready)))
            except workers.StartupFailed as error:
                raise CommandError(str(error)) from error
        finally:
            for sock in reserved:
                sock.close()
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)

    def _serve_as_worker(self, host: str, port: int, options: dict[str, Any]) -> None:
        channel = ParentChannel(options["worker_channel"])
        label_logs(options["worker_index"])
        if options["metrics_dir"]:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = options["metrics_dir"]
            metrics.enable()  # recorded to files; the parent serves them

        def ready(server: InboundServer, bound_host: str, bound_port: int) -> None:
            channel.ready(
                {
                    "pid": os.getpid(),
                    "address": [bound_host, bound_port],
                    "starttls": server.tls.context() is not None and not server.lmtp,
                    "tls_address": server.tls_address,
                }
            )

        try:
            _run(
                host,
                port,
                options,
                on_ready=ready,
                reuse_port=True,
                tls_bind=options["tls_bind"],
                submission_bind=options["submission_bind"],
            )
        except CommandError as error:
            # The parent says it once, as its own error, and stops the other workers.
            channel.failed(str(error))
            raise SystemExit(1) from error
        finally:
            channel.close()


def _run(
    host: str,
    port: int,
    options: dict[str, Any],
    *,
    on_ready: Callable[[InboundServer, str, int], None],
    monitor: Monitor | None = None,
    **listen: Any,
) -> None:
    # A daemon (a single smtpd, or each worker): connections stay open while usable,
    # whatever CONN_MAX_AGE says. The parent of workers has none to keep.
    _db.keep_connections_open()
    user, group = options.get("user"), options.get("group")

    def drop_privileges() -> None:
        uid, gid = listeners.drop_privileges(user, group)
        logging.getLogger(__name__).info("running as uid %d, gid %d", uid, gid)

    serving = run_server(
        host,
        port,
        hostname=options["hostname"],
        tls_certfile=options["tls_cert"],
        tls_keyfile=options["tls_key"],
        on_ready=on_ready,
        listeners=options.get("listeners"),
        before_serving=drop_privileges if user or group else None,
        lmtp=options["lmtp"],
        lmtp_socket=options["lmtp_socket"],
        **listen,
    )
    try:
        # The metrics listener binds first, as the SMTP ones do, before privileges drop.
        asyncio.run(serving if monitor is None else monitor.around(serving))
    except listeners.ListenerError as error:
        raise CommandError(str(error)) from error
    except OSError as error:
        raise CommandError(bind_error(host, port, error)) from error


def _worker_count(value: str) -> int:
    if value == "auto":
        return workers.cpu_count()
    if not value.isdigit() or int(value) < 1:
        raise ArgumentTypeError(f"{value!r} is not a number of workers (1, 2, … or auto)")
    return int(value)


def _reserve(reserved: list[socket.socket], host: str, port: int) -> int:
    try:
        sockets = workers.reserve(host, port)
    except OSError as error:
        raise CommandError(bind_error(host, port, error)) from error
    reserved += sockets
    return int(sockets[0].getsockname()[1])


def _reserve_bind(reserved: list[socket.socket], value: str) -> str:
    host, port = split_bind(value)
    return _shown(host, _reserve(reserved, host, port))


def _shown(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

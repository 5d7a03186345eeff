"""System checks for ``INBOUND_SMTP`` (ids ``inbound_smtp.E0nn`` / ``W0nn``).

Ids are never reused; a retired id stays reserved. The catalogue is in the README.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import re
import ssl
from collections.abc import Sequence
from typing import Any

import django
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.db import DatabaseError
from django.utils.module_loading import import_string

from django_inbound_smtp import routing
from django_inbound_smtp._celery import celery_app
from django_inbound_smtp.conf import DEFAULTS, SETTINGS_NAME, load_callable
from django_inbound_smtp.exceptions import ConfigurationError
from django_inbound_smtp.monitoring.checks import observability_errors
from django_inbound_smtp.senderauth.network import parse_zone
from django_inbound_smtp.senderauth.resolver import parse_nameserver
from django_inbound_smtp.tls import server_context
from django_inbound_smtp.validators._reply_checks import reply_address_errors

_POSITIVE_INTS = (
    "MAX_MESSAGE_SIZE",
    "MAX_RECIPIENTS",
    "PROCESSING_CONCURRENCY",
    "MAX_ATTEMPTS",
    "MAX_SESSIONS",
    "MAX_SESSIONS_PER_CLIENT",
    "AUTH_MAX_FAILURES",
    "RCPT_ERROR_LIMIT",
    "COMMAND_LINE_LIMIT",
    "AUTH_FAILURES_PER_CLIENT",
    "SPOOL_MEMORY_LIMIT",
    "PARSE_MAX_DEPTH",
    "PARSE_MAX_PARTS",
    "PARSE_MAX_HEADER_BYTES",
    "DIRECTORY_MAX_SIZE",
)
_POSITIVE_NUMBERS = (
    "COMMAND_TIMEOUT",
    "DATA_TIMEOUT",
    "REDISPATCH_AFTER",
    "PROCESSING_LEASE",
    "PROXY_PROTOCOL_TIMEOUT",
    "AUTH_FAILURE_WINDOW",
)
_NON_NEGATIVE_NUMBERS = (
    "SHUTDOWN_GRACE",
    "SWEEP_INTERVAL",
    "GREETING_DELAY",
    "MIN_FREE_SPACE",
    "DIRECTORY_TTL",
    "PRUNE_INTERVAL",
)
_BIND = re.compile(r"^(\[[^\]]+\]|[^:\[\]]*):\d{1,5}$")


def _key_error(key: str, problem: str, hint: str, check_id: str) -> Error:
    return Error(f"{SETTINGS_NAME}[{key!r}] {problem}.", hint=hint, id=f"inbound_smtp.{check_id}")


def _celery_tasks() -> list[str]:
    try:
        return list(celery_app().tasks)
    except Exception:  # no usable Celery app: no task names to accept
        return []


def _routes_errors(value: Any) -> list[CheckMessage]:
    tasks = _celery_tasks
    return [
        _key_error("ROUTES", problem, "See the README, Routing.", "E055")
        for problem in routing.route_errors(value, celery_tasks=tasks)
    ]


def _number_errors(values: dict[str, Any]) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    for key in _POSITIVE_INTS:
        value = values.get(key, DEFAULTS[key])
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            errors.append(_key_error(key, "must be a positive integer", f"Got {value!r}.", "E002"))
    for key in _POSITIVE_NUMBERS + _NON_NEGATIVE_NUMBERS:
        value = values.get(key, DEFAULTS[key])
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        floor = 0 if key in _NON_NEGATIVE_NUMBERS else 1e-9
        if not is_number or value < floor:
            errors.append(_key_error(key, "must be a positive number", f"Got {value!r}.", "E002"))
    return errors


def _database_threads_errors(value: Any) -> list[CheckMessage]:
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return []
    return [
        _key_error(
            "DATABASE_THREADS", 'must be "auto" or a positive integer', f"Got {value!r}.", "E027"
        )
    ]


def _validator_errors(paths: Any) -> list[CheckMessage]:
    if isinstance(paths, str) or not isinstance(paths, Sequence) or not paths:
        return [
            _key_error(
                "RECIPIENT_VALIDATORS",
                "must be a non-empty list of dotted paths",
                "Without a validator every recipient is refused.",
                "E003",
            )
        ]
    errors: list[CheckMessage] = []
    for path in paths:
        try:
            load_callable(str(path))
        except ConfigurationError as error:
            errors.append(
                _key_error(
                    "RECIPIENT_VALIDATORS", "names an unusable validator", str(error), "E003"
                )
            )
    return errors


_CHOICES = {
    # key: (allowed values, check id)
    "DISPATCH": (("auto", "inline", "celery", "tasks", "memory"), "E007"),
    "BARE_NEWLINES": (("normalize", "keep", "reject"), "E012"),
    "EARLY_TALKERS": (("allow", "reject"), "E014"),
}


def _dispatch_errors(value: Any) -> list[CheckMessage]:
    """``DISPATCH``: ``tasks`` needs Django's task framework (6.0+); a dotted path must
    name a ``Dispatcher`` subclass."""
    if value == "tasks" and django.VERSION < (6, 0):
        return [
            _key_error(
                "DISPATCH",
                "is 'tasks', which needs Django 6.0 or later (django.tasks)",
                f"This is Django {django.get_version()}; use 'inline' or 'celery'.",
                "E025",
            )
        ]
    if not isinstance(value, str) or "." not in value:
        return []
    from django_inbound_smtp.lifecycle.backends import Dispatcher

    try:
        target = import_string(value)
    except ImportError as error:
        target, reason = None, f"It cannot be imported: {error}."
    else:
        reason = f"{value!r} is not a subclass of {Dispatcher.__module__}.Dispatcher."
    if isinstance(target, type) and issubclass(target, Dispatcher):
        return []
    return [_key_error("DISPATCH", "names an unusable dispatcher", reason, "E026")]


def _choice_errors(raw: dict[str, Any]) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    for key, (allowed, check_id) in _CHOICES.items():
        value = raw.get(key, DEFAULTS[key])
        if key == "DISPATCH" and isinstance(value, str) and "." in value:
            errors += _dispatch_errors(value)
            continue
        if key == "DISPATCH" and value in allowed:
            errors += _dispatch_errors(value)
        if value not in allowed:
            errors.append(
                _key_error(
                    key,
                    f"must be one of {', '.join(map(repr, allowed))}",
                    f"Got {value!r}.",
                    check_id,
                )
            )
    return errors


def _proxy_errors(networks: Any) -> list[CheckMessage]:
    if isinstance(networks, str) or not isinstance(networks, list | tuple):
        networks = [networks]
    for network in networks:
        try:
            ipaddress.ip_network(str(network), strict=False)
        except ValueError:
            return [
                _key_error(
                    "PROXY_PROTOCOL_FROM",
                    "must be a list of networks",
                    f"{network!r} is not an address or CIDR network.",
                    "E011",
                )
            ]
    return []


def _tls_errors(raw: dict[str, Any]) -> list[CheckMessage]:
    certfile, keyfile = raw.get("TLS_CERTFILE"), raw.get("TLS_KEYFILE")
    if certfile is None and keyfile is None:
        if raw.get("TLS_REQUIRED") or raw.get("TLS_BIND") or raw.get("SUBMISSION_BIND"):
            return [
                _key_error(
                    "TLS_REQUIRED",
                    "(or TLS_BIND, SUBMISSION_BIND) is set but no certificate is configured",
                    "Set TLS_CERTFILE and TLS_KEYFILE.",
                    "E009",
                )
            ]
        return []
    if certfile is None or keyfile is None:
        return [
            _key_error(
                "TLS_CERTFILE",
                "and TLS_KEYFILE must be set together",
                "Give both PEM paths, or neither.",
                "E009",
            )
        ]
    try:
        server_context(str(certfile), str(keyfile))
    except (OSError, ssl.SSLError) as error:
        return [
            _key_error(
                "TLS_CERTFILE",
                "and TLS_KEYFILE cannot be loaded",
                f"{type(error).__name__}: {error}",
                "E010",
            )
        ]
    return []


def _sender_check_errors(raw: dict[str, Any]) -> list[CheckMessage]:
    """SENDER_CHECKS, DNSBL_ZONES, DNSBL_THRESHOLD, DNS, SENDER_CHECKS_TIMEOUT, AUTHSERV_ID."""
    errors: list[CheckMessage] = []
    checks = raw.get("SENDER_CHECKS", {})
    known = DEFAULTS["SENDER_CHECKS"]
    if not isinstance(checks, dict) or any(
        key not in known or value not in ("off", "tag", "tempfail", "reject")
        for key, value in checks.items()
    ):
        hint = f"Keys: {', '.join(known)}; values: 'off', 'tag', 'tempfail', 'reject'."
        errors.append(_key_error("SENDER_CHECKS", "must map check names to policies", hint, "E017"))
        checks = {}
    zones = raw.get("DNSBL_ZONES", [])
    try:
        if isinstance(zones, str) or not isinstance(zones, list | tuple):
            raise ValueError(f"got {zones!r}")
        for zone in zones:
            parse_zone(str(zone))
    except ValueError as error:
        errors.append(_key_error("DNSBL_ZONES", "must be a list of zones", str(error), "E018"))
    for key, floor in (("DNSBL_THRESHOLD", 1), ("SENDER_CHECKS_TIMEOUT", 1e-9)):
        value = raw.get(key, DEFAULTS[key])
        if isinstance(value, bool) or not isinstance(value, int | float) or value < floor:
            errors.append(_key_error(key, "must be a positive number", f"Got {value!r}.", "E002"))
    dns = raw.get("DNS", {})
    try:
        if not isinstance(dns, dict) or set(dns) - set(DEFAULTS["DNS"]):
            raise ValueError(f"keys are {', '.join(DEFAULTS['DNS'])}")
        for server in dns.get("NAMESERVERS") or []:
            parse_nameserver(str(server))
        if not float(dns.get("TIMEOUT", 1)) > 0 or int(dns.get("CACHE_SIZE", 0)) < 0:
            raise ValueError("TIMEOUT must be positive, CACHE_SIZE not negative")
    except (TypeError, ValueError) as error:
        errors.append(
            _key_error("DNS", "is not a valid resolver configuration", str(error), "E019")
        )
    authserv_id = raw.get("AUTHSERV_ID")
    if authserv_id is not None and not (
        isinstance(authserv_id, str) and re.fullmatch(r"[A-Za-z0-9_.-]{1,253}", authserv_id)
    ):
        errors.append(
            _key_error(
                "AUTHSERV_ID", "must be None or a host name", f"Got {authserv_id!r}.", "E020"
            )
        )
    errors += _missing_extra(checks)
    return errors


def _missing_extra(checks: dict[str, Any]) -> list[CheckMessage]:
    needs = {"DKIM": "dkim", "DMARC": "publicsuffixlist"}
    return [
        Warning(
            f"{SETTINGS_NAME}['SENDER_CHECKS'][{key!r}] is {checks[key]!r} but {module} is "
            "not installed.",
            hint="Install django-inbound-smtp[auth], or set the check to 'tag' or 'off'.",
            id="inbound_smtp.W003",
        )
        for key, module in needs.items()
        if checks.get(key) in ("tempfail", "reject") and importlib.util.find_spec(module) is None
    ]


# Statuses retention may prune: finished ones. received and processing never are.
_PRUNABLE = ("processed", "failed", "duplicate")


def _retention_errors(value: Any) -> list[CheckMessage]:
    hint = 'e.g. {"processed": 30, "failed": 90, "duplicate": 7}; None keeps for ever'
    if not isinstance(value, dict):
        return [_key_error("RETENTION", "must be a dict of status to days", hint, "E045")]
    problems = [
        f"{status!r} is not a status retention may prune (only {', '.join(_PRUNABLE)})"
        for status in value
        if status not in _PRUNABLE
    ]
    problems += [
        f"{status!r}: {days!r} is not None or a whole number of days >= 0"
        for status, days in value.items()
        if days is not None and (isinstance(days, bool) or not isinstance(days, int) or days < 0)
    ]
    return [_key_error("RETENTION", problem, hint, "E045") for problem in problems]


def _loop_errors(raw: dict[str, Any]) -> list[CheckMessage]:
    hops = raw.get("LOOP_MAX_OWN_HOPS", DEFAULTS["LOOP_MAX_OWN_HOPS"])
    if isinstance(hops, bool) or not isinstance(hops, int) or not 1 <= hops <= 100:
        return [
            _key_error(
                "LOOP_MAX_OWN_HOPS",
                "must be an integer from 1 (our own Received: line counts) to 100",
                f"Got {hops!r}.",
                "E058",
            )
        ]
    return []


@register(Tags.database)
def check_mailbox_handlers(
    app_configs: Any = None, databases: Sequence[str] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """A mailbox's handler is a route too: one naming nothing is the same error as a
    broken ``ROUTES`` entry. Database checks run when asked for a database (``smtpd``,
    ``migrate``, ``check --database``)."""
    from django_inbound_smtp.models import Mailbox

    errors: list[CheckMessage] = []
    for alias in databases or ():
        try:
            handlers = set(
                Mailbox.objects.using(alias).exclude(handler="").values_list("handler", flat=True)
            )
        except DatabaseError:  # not migrated yet: nothing to check
            continue
        errors += [
            Error(
                f"Mailbox handler {handler!r} is neither an importable callable nor a task of "
                "the project's Celery app.",
                hint="Fix the mailbox's handler in the admin (its messages would fail).",
                id="inbound_smtp.E056",
            )
            for handler in sorted(handlers)
            if not routing.handler_known(handler, celery_tasks=_celery_tasks)
        ]
    return errors


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Validate the type and range of every ``INBOUND_SMTP`` key."""
    raw = getattr(settings, SETTINGS_NAME, {})
    if not isinstance(raw, dict):
        return [
            Error(
                f"{SETTINGS_NAME} must be a dict.",
                hint=f"Got {type(raw).__name__}.",
                id="inbound_smtp.E001",
            )
        ]
    errors: list[CheckMessage] = [
        Warning(
            f"{SETTINGS_NAME}[{key!r}] is not a known setting and is ignored.",
            hint="Check the spelling against the README's configuration table.",
            id="inbound_smtp.W001",
        )
        for key in raw
        if key not in DEFAULTS
    ]
    errors += _number_errors(raw)
    errors += _routes_errors(raw.get("ROUTES", DEFAULTS["ROUTES"]))
    errors += _validator_errors(raw.get("RECIPIENT_VALIDATORS", DEFAULTS["RECIPIENT_VALIDATORS"]))
    storage = raw.get("STORAGE", DEFAULTS["STORAGE"])
    if storage not in settings.STORAGES:
        errors.append(
            _key_error(
                "STORAGE",
                f"names {storage!r}, which is not in STORAGES",
                f"Known aliases: {', '.join(sorted(settings.STORAGES))}.",
                "E004",
            )
        )
    spool_dir = raw.get("SPOOL_DIR", DEFAULTS["SPOOL_DIR"])
    if spool_dir is not None and (not isinstance(spool_dir, str) or not os.path.isabs(spool_dir)):
        errors.append(
            _key_error(
                "SPOOL_DIR",
                "must be None or an absolute folder path",
                f"Got {spool_dir!r}.",
                "E016",
            )
        )
    delimiter = raw.get("PLUS_DELIMITER", DEFAULTS["PLUS_DELIMITER"])
    if delimiter not in (None, "") and (not isinstance(delimiter, str) or len(delimiter) != 1):
        errors.append(
            _key_error(
                "PLUS_DELIMITER", "must be one character, or empty", f"Got {delimiter!r}.", "E005"
            )
        )
    limits = raw.get("COMMAND_CALL_LIMITS", DEFAULTS["COMMAND_CALL_LIMITS"])
    if not isinstance(limits, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v > 0
        for k, v in limits.items()
    ):
        errors.append(
            _key_error(
                "COMMAND_CALL_LIMITS",
                "must map command names to positive integers",
                f"Got {limits!r}.",
                "E008",
            )
        )
    errors += _tls_errors(raw)
    errors += _proxy_errors(raw.get("PROXY_PROTOCOL_FROM", []))
    line_limit = raw.get("COMMAND_LINE_LIMIT", DEFAULTS["COMMAND_LINE_LIMIT"])
    if isinstance(line_limit, int) and not 512 <= line_limit <= 1000:
        errors.append(
            _key_error(
                "COMMAND_LINE_LIMIT",
                "must be between 512 (RFC 5321 §4.5.3.1.4) and 1000 (the reader's buffer)",
                f"Got {line_limit!r}.",
                "E013",
            )
        )
    data_line = raw.get("DATA_LINE_LIMIT")
    if data_line is not None and (
        isinstance(data_line, bool) or not isinstance(data_line, int) or data_line < 78
    ):
        errors.append(
            _key_error(
                "DATA_LINE_LIMIT",
                "must be None or an integer of at least 78",
                f"Got {data_line!r}.",
                "E015",
            )
        )
    errors += _choice_errors(raw)
    errors += _database_threads_errors(raw.get("DATABASE_THREADS", DEFAULTS["DATABASE_THREADS"]))
    for key in ("TLS_BIND", "SUBMISSION_BIND"):
        value = raw.get(key)
        if value is not None and (not isinstance(value, str) or not _BIND.match(value)):
            errors.append(_key_error(key, "must be 'HOST:PORT'", f"Got {value!r}.", "E006"))
    errors += _sender_check_errors(raw)
    errors += observability_errors(raw)
    errors += _retention_errors(raw.get("RETENTION", DEFAULTS["RETENTION"]))
    errors += reply_address_errors(raw)
    errors += _loop_errors(raw)
    bind = raw.get("BIND", DEFAULTS["BIND"])
    if not isinstance(bind, str) or not _BIND.match(bind):
        errors.append(_key_error("BIND", "must be 'HOST:PORT'", f"Got {bind!r}.", "E006"))
    elif int(bind.rsplit(":", 1)[1]) in range(1, 1024):
        errors.append(
            Warning(
                f"{SETTINGS_NAME}['BIND'] uses privileged port {bind.rsplit(':', 1)[1]}.",
                hint="Binding it needs root or CAP_NET_BIND_SERVICE; consider a high port "
                "behind a redirect.",
                id="inbound_smtp.W002",
            )
        )
    return errors

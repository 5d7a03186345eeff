"""The ``INBOUND_SMTP`` settings: defaults, one typed property per key, read lazily.

Nothing is read at import time. :func:`get_settings` caches one snapshot and the
``setting_changed`` receiver drops it, so ``override_settings`` works in tests.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from django.conf import settings as django_settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from django_inbound_smtp.conf.defaults import DEFAULTS
from django_inbound_smtp.exceptions import ConfigurationError

__all__ = ["DEFAULTS", "DnsOptions", "InboundSmtpSettings", "get_settings", "load_callable"]

SETTINGS_NAME = "INBOUND_SMTP"


class DnsOptions(NamedTuple):
    """``INBOUND_SMTP["DNS"]`` merged over its defaults."""

    nameservers: tuple[str, ...]
    timeout: float
    cache_size: int


class InboundSmtpSettings:
    """A read-only snapshot of ``settings.INBOUND_SMTP`` merged over :data:`DEFAULTS`."""

    def __init__(self, user: Mapping[str, Any]) -> None:
        self._values = {**DEFAULTS, **user}

    def _get(self, key: str) -> Any:
        return self._values[key]

    @property
    def BIND(self) -> str:
        """Default ``HOST:PORT`` for ``manage.py smtpd``."""
        return str(self._get("BIND"))

    @property
    def HOSTNAME(self) -> str | None:
        """Our name on the wire, or ``None`` for the machine's FQDN."""
        value = self._get("HOSTNAME")
        return None if value is None else str(value)

    @property
    def MAX_MESSAGE_SIZE(self) -> int:
        """Largest accepted message in bytes."""
        return int(self._get("MAX_MESSAGE_SIZE"))

    @property
    def MAX_RECIPIENTS(self) -> int:
        """Largest number of accepted recipients per transaction."""
        return int(self._get("MAX_RECIPIENTS"))

    @property
    def COMMAND_TIMEOUT(self) -> float:
        """Idle seconds before a silent client is disconnected."""
        return float(self._get("COMMAND_TIMEOUT"))

    @property
    def COMMAND_LINE_LIMIT(self) -> int:
        """Longest command line in octets."""
        return int(self._get("COMMAND_LINE_LIMIT"))

    @property
    def SMTPUTF8(self) -> bool:
        """Offer SMTPUTF8."""
        return bool(self._get("SMTPUTF8"))

    @property
    def RCPT_ERROR_LIMIT(self) -> int:
        """Refused recipients per session before the session is closed."""
        return int(self._get("RCPT_ERROR_LIMIT"))

    @property
    def BARE_NEWLINES(self) -> str:
        """``"normalize"``, ``"keep"`` or ``"reject"``."""
        return str(self._get("BARE_NEWLINES"))

    @property
    def DATA_LINE_LIMIT(self) -> int | None:
        """Longest DATA line in octets, or ``None`` for no limit."""
        value = self._get("DATA_LINE_LIMIT")
        return None if value is None else int(value)

    @property
    def EARLY_TALKERS(self) -> str:
        """``"allow"`` or ``"reject"``."""
        return str(self._get("EARLY_TALKERS"))

    @property
    def GREETING_DELAY(self) -> float:
        """Seconds to wait before the greeting."""
        return float(self._get("GREETING_DELAY"))

    @property
    def DATA_TIMEOUT(self) -> float:
        """Seconds a whole DATA transfer may take."""
        return float(self._get("DATA_TIMEOUT"))

    @property
    def MAX_SESSIONS(self) -> int:
        """Concurrent SMTP sessions in total."""
        return int(self._get("MAX_SESSIONS"))

    @property
    def MAX_SESSIONS_PER_CLIENT(self) -> int:
        """Concurrent SMTP sessions per client IP address."""
        return int(self._get("MAX_SESSIONS_PER_CLIENT"))

    @property
    def COMMAND_CALL_LIMITS(self) -> Mapping[str, int]:
        """Per-session command budgets (aiosmtpd's ``command_call_limit``)."""
        return dict(self._get("COMMAND_CALL_LIMITS"))

    @property
    def TLS_CERTFILE(self) -> str | None:
        """PEM certificate chain for TLS, or ``None``."""
        value = self._get("TLS_CERTFILE")
        return None if value is None else str(value)

    @property
    def TLS_KEYFILE(self) -> str | None:
        """PEM private key for TLS, or ``None``."""
        value = self._get("TLS_KEYFILE")
        return None if value is None else str(value)

    @property
    def TLS_REQUIRED(self) -> bool:
        """Refuse MAIL before STARTTLS."""
        return bool(self._get("TLS_REQUIRED"))

    @property
    def TLS_BIND(self) -> str | None:
        """``HOST:PORT`` of the implicit-TLS listener, or ``None``."""
        value = self._get("TLS_BIND")
        return None if value is None else str(value)

    @property
    def SUBMISSION_BIND(self) -> str | None:
        """``HOST:PORT`` of the authenticated submission listener, or ``None``."""
        value = self._get("SUBMISSION_BIND")
        return None if value is None else str(value)

    @property
    def AUTH_MAX_FAILURES(self) -> int:
        """Failed AUTH attempts per session before the session is closed."""
        return int(self._get("AUTH_MAX_FAILURES"))

    @property
    def AUTH_FAILURES_PER_CLIENT(self) -> int:
        """Failed AUTH attempts per client address within the window before refusal."""
        return int(self._get("AUTH_FAILURES_PER_CLIENT"))

    @property
    def AUTH_FAILURE_WINDOW(self) -> float:
        """Seconds the per-client AUTH failures are remembered."""
        return float(self._get("AUTH_FAILURE_WINDOW"))

    @property
    def PROXY_PROTOCOL_FROM(self) -> tuple[str, ...]:
        """Trusted PROXY-protocol sender networks (CIDR)."""
        return tuple(str(network) for network in self._get("PROXY_PROTOCOL_FROM") or ())

    @property
    def PROXY_PROTOCOL_TIMEOUT(self) -> float:
        """Seconds to wait for the PROXY header."""
        return float(self._get("PROXY_PROTOCOL_TIMEOUT"))

    @property
    def RECIPIENT_VALIDATORS(self) -> tuple[str, ...]:
        """Dotted paths of the recipient validator chain."""
        return tuple(self._get("RECIPIENT_VALIDATORS"))

    @property
    def ROUTES(self) -> tuple[dict[str, Any], ...]:
        """Routes (dicts: name, handler, conditions) tried in order for each recipient."""
        return tuple(self._get("ROUTES"))

    @property
    def DIRECTORY_TTL(self) -> float:
        """Seconds RCPT answers may be given from memory; 0 disables the directory."""
        return float(self._get("DIRECTORY_TTL"))

    @property
    def DIRECTORY_MAX_SIZE(self) -> int:
        """Active mailboxes above which the directory remembers per address instead."""
        return int(self._get("DIRECTORY_MAX_SIZE"))

    @property
    def PLUS_DELIMITER(self) -> str:
        """Sub-address delimiter; ``""`` disables plus-addressing."""
        return str(self._get("PLUS_DELIMITER") or "")

    @property
    def STORAGE(self) -> str:
        """``STORAGES`` alias for raw message files."""
        return str(self._get("STORAGE"))

    @property
    def STORAGE_PREFIX(self) -> str:
        """Path prefix of raw message files inside the storage."""
        return str(self._get("STORAGE_PREFIX")).strip("/")

    @property
    def SPOOL_DIR(self) -> str | None:
        """Folder for spooled messages, or ``None`` for the default next to storage."""
        value = self._get("SPOOL_DIR")
        return None if value is None else str(value)

    @property
    def SPOOL_MEMORY_LIMIT(self) -> int:
        """Bytes of a message kept in memory before it spills to a spool file."""
        return int(self._get("SPOOL_MEMORY_LIMIT"))

    @property
    def MIN_FREE_SPACE(self) -> int:
        """Free bytes needed on the spool and storage file systems to accept MAIL."""
        return int(self._get("MIN_FREE_SPACE"))

    @property
    def PARSE_MAX_DEPTH(self) -> int:
        """Deepest multipart nesting parsed."""
        return int(self._get("PARSE_MAX_DEPTH"))

    @property
    def PARSE_MAX_PARTS(self) -> int:
        """Most MIME parts parsed in one message."""
        return int(self._get("PARSE_MAX_PARTS"))

    @property
    def PARSE_MAX_HEADER_BYTES(self) -> int:
        """Largest header block of one part, in bytes."""
        return int(self._get("PARSE_MAX_HEADER_BYTES"))

    @property
    def DATABASE_THREADS(self) -> int | str:
        """Threads doing ``smtpd``'s database work, or ``"auto"``."""
        value = self._get("DATABASE_THREADS")
        return value if value == "auto" else int(value)

    @property
    def PROCESSING_CONCURRENCY(self) -> int:
        """Worker threads for inline processing."""
        return int(self._get("PROCESSING_CONCURRENCY"))

    @property
    def DISPATCH(self) -> str:
        """``"auto"``, ``"inline"`` or ``"celery"``."""
        return str(self._get("DISPATCH"))

    @property
    def CELERY_APP(self) -> str | None:
        """Dotted path of the project's Celery app, or ``None`` to find it."""
        value = self._get("CELERY_APP")
        return None if value is None else str(value)

    @property
    def REDISPATCH_AFTER(self) -> float:
        """Seconds before the sweeper re-schedules a waiting or abandoned message."""
        return float(self._get("REDISPATCH_AFTER"))

    @property
    def PROCESSING_LEASE(self) -> float:
        """Seconds a processing claim lasts without renewal."""
        return float(self._get("PROCESSING_LEASE"))

    @property
    def MAX_ATTEMPTS(self) -> int:
        """Processing attempts before a failed message is left alone."""
        return int(self._get("MAX_ATTEMPTS"))

    @property
    def SWEEP_INTERVAL(self) -> float:
        """Seconds between sweeps in ``smtpd``; 0 disables."""
        return float(self._get("SWEEP_INTERVAL"))

    @property
    def SHUTDOWN_GRACE(self) -> float:
        """Seconds a stopping server waits for work in flight."""
        return float(self._get("SHUTDOWN_GRACE"))

    @property
    def SENDER_CHECKS(self) -> Mapping[str, str]:
        """Policy per sender check (``"off"``, ``"tag"``, ``"tempfail"``, ``"reject"``)."""
        return {**DEFAULTS["SENDER_CHECKS"], **(self._get("SENDER_CHECKS") or {})}

    @property
    def DNSBL_ZONES(self) -> tuple[str, ...]:
        """DNSBL/DNSWL zones, postscreen syntax."""
        return tuple(str(zone) for zone in self._get("DNSBL_ZONES") or ())

    @property
    def DNSBL_THRESHOLD(self) -> int:
        """Summed DNSBL weight at which a client is listed."""
        return int(self._get("DNSBL_THRESHOLD"))

    @property
    def DNS(self) -> DnsOptions:
        """Resolver options: nameservers, per-lookup timeout, cache size."""
        options = {**DEFAULTS["DNS"], **(self._get("DNS") or {})}
        return DnsOptions(
            nameservers=tuple(str(server) for server in options["NAMESERVERS"] or ()),
            timeout=float(options["TIMEOUT"]),
            cache_size=int(options["CACHE_SIZE"]),
        )

    @property
    def SENDER_CHECKS_TIMEOUT(self) -> float:
        """Seconds the checks of one SMTP phase may take together."""
        return float(self._get("SENDER_CHECKS_TIMEOUT"))

    @property
    def AUTHSERV_ID(self) -> str | None:
        """Our authserv-id, or ``None`` for the server's host name."""
        value = self._get("AUTHSERV_ID")
        return None if value is None else str(value)

    @property
    def METRICS_BIND(self) -> str | None:
        """``HOST:PORT`` of the metrics and health listener, or ``None``."""
        value = self._get("METRICS_BIND")
        return None if value is None else str(value)

    @property
    def METRICS_CACHE(self) -> float:
        """Seconds the queue gauges are reused between scrapes."""
        return float(self._get("METRICS_CACHE"))

    @property
    def READY_TIMEOUT(self) -> float:
        """Seconds ``/readyz`` waits for its database and folder checks."""
        return float(self._get("READY_TIMEOUT"))

    @property
    def READY_MIN_FREE_SPACE(self) -> int:
        """Free bytes ``/readyz`` requires in each message folder."""
        value = self._get("READY_MIN_FREE_SPACE")
        return self.MIN_FREE_SPACE if value is None else int(value)

    @property
    def STUCK_WARNING_AFTER(self) -> float:
        """Seconds of waiting after which ``inbound_status`` warns."""
        return float(self._get("STUCK_WARNING_AFTER"))

    @property
    def STUCK_CRITICAL_AFTER(self) -> float:
        """Seconds of waiting after which ``inbound_status`` is critical."""
        return float(self._get("STUCK_CRITICAL_AFTER"))

    @property
    def RETENTION(self) -> dict[str, int | None]:
        """Days finished messages are kept per status (``None``: for ever), over the defaults."""
        merged: dict[str, int | None] = dict(DEFAULTS["RETENTION"])
        merged.update(self._get("RETENTION"))
        return {status: None if days is None else int(days) for status, days in merged.items()}

    @property
    def PRUNE_INTERVAL(self) -> float:
        """Seconds between prunes inside ``smtpd``; 0: never there."""
        return float(self._get("PRUNE_INTERVAL"))

    @property
    def REPLY_ADDRESS_DOMAINS(self) -> tuple[str, ...]:
        """Domains of signed reply addresses, lower-cased; the first is used for new ones."""
        return tuple(str(domain).lower() for domain in self._get("REPLY_ADDRESS_DOMAINS"))

    @property
    def REPLY_ADDRESS_PREFIX(self) -> str:
        """Local part before the separator of a signed reply address."""
        return str(self._get("REPLY_ADDRESS_PREFIX"))

    @property
    def RETURN_PATH_PREFIX(self) -> str:
        """Local part before the separator of a signed return path (VERP)."""
        return str(self._get("RETURN_PATH_PREFIX"))

    @property
    def REPLY_ADDRESS_SEPARATOR(self) -> str:
        """Between the prefix and the token."""
        return str(self._get("REPLY_ADDRESS_SEPARATOR"))

    @property
    def REPLY_ADDRESS_EXPIRY(self) -> float | None:
        """Seconds a new signed address stays valid, or ``None`` for no expiry."""
        value = self._get("REPLY_ADDRESS_EXPIRY")
        return None if value is None else float(value)

    @property
    def LOOP_MAX_OWN_HOPS(self) -> int:
        """Our own ``Received:`` fields a message may carry before it is a loop."""
        return int(self._get("LOOP_MAX_OWN_HOPS"))


def user_settings() -> Mapping[str, Any]:
    """The project's raw ``INBOUND_SMTP`` value (``{}`` when unset)."""
    value = getattr(django_settings, SETTINGS_NAME, {})
    return value if isinstance(value, Mapping) else {}


@functools.cache
def get_settings() -> InboundSmtpSettings:
    """The current settings snapshot. Validation lives in ``checks.py``."""
    return InboundSmtpSettings(user_settings())


@receiver(setting_changed)
def _reset_settings(*, setting: str, **kwargs: Any) -> None:
    if setting in (SETTINGS_NAME, "STORAGES"):
        get_settings.cache_clear()
        load_callable.cache_clear()


@functools.cache
def load_callable(dotted_path: str) -> Callable[..., Any]:
    """Import the callable named by ``dotted_path`` once; raise ``ConfigurationError``."""
    try:
        target = import_string(dotted_path)
    except ImportError as error:
        raise ConfigurationError(
            f"{SETTINGS_NAME}: cannot import {dotted_path!r}: {error}"
        ) from error
    if not callable(target):
        raise ConfigurationError(f"{SETTINGS_NAME}: {dotted_path!r} is not callable")
    return target  # type: ignore[no-any-return]

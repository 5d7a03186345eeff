"""System checks of the observability settings (called from ``checks.check_settings``).

Generic kinds keep the catalogue's ids (``E002`` numbers, ``E006`` ``HOST:PORT``);
``E049``, ``E050`` and ``W010`` are this feature's own.
"""

from __future__ import annotations

import re
from typing import Any

from django.core.checks import CheckMessage, Error, Warning

from django_inbound_smtp import metrics
from django_inbound_smtp.conf import DEFAULTS, SETTINGS_NAME

__all__ = ["observability_errors"]

_BIND = re.compile(r"^(\[[^\]]+\]|[^:\[\]]*):\d{1,5}$")


def _error(key: str, problem: str, got: Any, check_id: str) -> Error:
    return Error(
        f"{SETTINGS_NAME}[{key!r}] {problem}.", hint=f"Got {got!r}.", id=f"inbound_smtp.{check_id}"
    )


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def observability_errors(raw: dict[str, Any]) -> list[CheckMessage]:
    """Check ``METRICS_*``, ``READY_*`` and ``STUCK_*`` in the raw settings dict."""
    value = {key: raw.get(key, DEFAULTS[key]) for key in DEFAULTS}
    errors: list[CheckMessage] = []
    for key, floor in (
        ("METRICS_CACHE", 0.0),
        ("READY_TIMEOUT", 1e-9),
        ("STUCK_WARNING_AFTER", 1e-9),
        ("STUCK_CRITICAL_AFTER", 1e-9),
    ):
        if not _number(value[key]) or value[key] < floor:
            errors.append(_error(key, "must be a positive number", value[key], "E002"))
    bind = value["METRICS_BIND"]
    if bind is not None and (not isinstance(bind, str) or not _BIND.match(bind)):
        errors.append(_error("METRICS_BIND", "must be None or 'HOST:PORT'", bind, "E006"))
    warning, critical = value["STUCK_WARNING_AFTER"], value["STUCK_CRITICAL_AFTER"]
    if _number(warning) and _number(critical) and warning > critical:
        errors.append(
            _error(
                "STUCK_WARNING_AFTER",
                "must not be above STUCK_CRITICAL_AFTER",
                (warning, critical),
                "E049",
            )
        )
    free = value["READY_MIN_FREE_SPACE"]
    if free is not None and (isinstance(free, bool) or not isinstance(free, int) or free < 0):
        errors.append(
            _error("READY_MIN_FREE_SPACE", "must be None or a number of bytes >= 0", free, "E050")
        )
    if isinstance(bind, str) and not metrics.available():
        errors.append(
            Warning(
                f"{SETTINGS_NAME}['METRICS_BIND'] is set but prometheus-client is not installed.",
                hint="Install django-inbound-smtp[metrics]; smtpd refuses to start without it.",
                id="inbound_smtp.W010",
            )
        )
    return errors

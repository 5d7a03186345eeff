"""System checks of the signed reply address settings (called from ``checks.check_settings``).

``E061`` domains, ``E062`` prefixes and separator, ``E063`` expiry, ``W013`` the
validator missing from the chain.
"""

from __future__ import annotations

import re
from typing import Any

from django.core.checks import CheckMessage, Error, Warning

from django_inbound_smtp.conf import DEFAULTS, SETTINGS_NAME

__all__ = ["reply_address_errors"]

VALIDATOR = "django_inbound_smtp.validators.reply_addresses.reply_address_validator"
# The longest token (two 2**63 keys, an expiry) is 56 characters; 64 octets in all.
MAX_PREFIX_AND_SEPARATOR = 8
_DOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9-]{1,63})+$")
_PREFIX = re.compile(r"^[A-Za-z0-9._-]+$")
# Not in the token alphabet (a-z, 2-7), nor anything a local part cannot hold unquoted.
_SEPARATORS = frozenset("+-=_.")


def _error(key: str, problem: str, got: Any, check_id: str) -> Error:
    return Error(
        f"{SETTINGS_NAME}[{key!r}] {problem}.", hint=f"Got {got!r}.", id=f"inbound_smtp.{check_id}"
    )


def _value(raw: dict[str, Any], key: str) -> Any:
    return raw.get(key, DEFAULTS[key])


def _domain_errors(domains: Any) -> list[CheckMessage]:
    if isinstance(domains, str) or not isinstance(domains, list | tuple):
        return [_error("REPLY_ADDRESS_DOMAINS", "must be a list of domains", domains, "E061")]
    bad = [d for d in domains if not isinstance(d, str) or not _DOMAIN.match(d.lower())]
    if bad:
        return [_error("REPLY_ADDRESS_DOMAINS", "holds values that are not domains", bad, "E061")]
    return []


def _name_errors(raw: dict[str, Any]) -> list[CheckMessage]:
    reply = _value(raw, "REPLY_ADDRESS_PREFIX")
    bounce = _value(raw, "RETURN_PATH_PREFIX")
    separator = _value(raw, "REPLY_ADDRESS_SEPARATOR")
    errors: list[CheckMessage] = []
    if separator not in _SEPARATORS:
        errors.append(
            _error("REPLY_ADDRESS_SEPARATOR", "must be one of + - = _ .", separator, "E062")
        )
    for key, prefix in (("REPLY_ADDRESS_PREFIX", reply), ("RETURN_PATH_PREFIX", bounce)):
        if not isinstance(prefix, str) or not _PREFIX.match(prefix):
            errors.append(_error(key, "must be letters, digits, '.', '_' or '-'", prefix, "E062"))
        elif isinstance(separator, str) and separator in prefix:
            errors.append(_error(key, "must not contain the separator", prefix, "E062"))
        elif len(prefix) + 1 > MAX_PREFIX_AND_SEPARATOR:
            errors.append(
                _error(key, "is too long: with the separator, at most 8 characters", prefix, "E062")
            )
    if isinstance(reply, str) and isinstance(bounce, str) and reply.lower() == bounce.lower():
        errors.append(
            _error("RETURN_PATH_PREFIX", "must differ from REPLY_ADDRESS_PREFIX", bounce, "E062")
        )
    return errors


def reply_address_errors(raw: dict[str, Any]) -> list[CheckMessage]:
    """Check the ``REPLY_ADDRESS_*`` and ``RETURN_PATH_PREFIX`` keys."""
    domains = _value(raw, "REPLY_ADDRESS_DOMAINS")
    errors = _domain_errors(domains) + _name_errors(raw)
    expiry = _value(raw, "REPLY_ADDRESS_EXPIRY")
    if expiry is not None and (
        isinstance(expiry, bool) or not isinstance(expiry, int | float) or expiry <= 0
    ):
        errors.append(
            _error("REPLY_ADDRESS_EXPIRY", "must be None or a positive number", expiry, "E063")
        )
    validators = _value(raw, "RECIPIENT_VALIDATORS")
    if domains and isinstance(validators, list | tuple) and VALIDATOR not in validators:
        errors.append(
            Warning(
                f"{SETTINGS_NAME}['REPLY_ADDRESS_DOMAINS'] is set but "
                "RECIPIENT_VALIDATORS does not list the reply address validator.",
                hint=f"Add {VALIDATOR!r} first in RECIPIENT_VALIDATORS, or replies to "
                "signed addresses are refused.",
                id="inbound_smtp.W013",
            )
        )
    return errors

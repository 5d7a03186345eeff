"""Tier 2: settings snapshot, lazy reading, and the system check catalogue."""

from __future__ import annotations

import pytest
from django.core.checks import Error, Warning
from django.test import override_settings

from django_inbound_smtp.checks import check_settings
from django_inbound_smtp.conf import DEFAULTS, get_settings, load_callable
from django_inbound_smtp.exceptions import ConfigurationError


def test_defaults_apply_when_unset() -> None:
    with override_settings(INBOUND_SMTP={}):
        assert get_settings().MAX_MESSAGE_SIZE == DEFAULTS["MAX_MESSAGE_SIZE"]
        assert get_settings().HOSTNAME is None


def test_override_settings_is_seen_immediately() -> None:
    assert get_settings().HOSTNAME == "mx.test"
    with override_settings(INBOUND_SMTP={"HOSTNAME": "other.test", "PLUS_DELIMITER": None}):
        assert get_settings().HOSTNAME == "other.test"
        assert get_settings().PLUS_DELIMITER == ""
    assert get_settings().HOSTNAME == "mx.test"


def test_load_callable_errors_name_the_setting() -> None:
    with pytest.raises(ConfigurationError, match="INBOUND_SMTP: cannot import 'nope.missing'"):
        load_callable("nope.missing")
    with pytest.raises(ConfigurationError, match="is not callable"):
        load_callable("django_inbound_smtp.conf.SETTINGS_NAME")


def test_valid_settings_pass() -> None:
    assert check_settings() == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            ["not", "a", "dict"],
            [Error("INBOUND_SMTP must be a dict.", hint="Got list.", id="inbound_smtp.E001")],
        ),
        (
            {"MAX_MESAGE_SIZE": 10},
            [
                Warning(
                    "INBOUND_SMTP['MAX_MESAGE_SIZE'] is not a known setting and is ignored.",
                    hint="Check the spelling against the README's configuration table.",
                    id="inbound_smtp.W001",
                )
            ],
        ),
        (
            {"MAX_RECIPIENTS": 0},
            [
                Error(
                    "INBOUND_SMTP['MAX_RECIPIENTS'] must be a positive integer.",
                    hint="Got 0.",
                    id="inbound_smtp.E002",
                )
            ],
        ),
        (
            {"COMMAND_TIMEOUT": "soon"},
            [
                Error(
                    "INBOUND_SMTP['COMMAND_TIMEOUT'] must be a positive number.",
                    hint="Got 'soon'.",
                    id="inbound_smtp.E002",
                )
            ],
        ),
        (
            {"RECIPIENT_VALIDATORS": []},
            [
                Error(
                    "INBOUND_SMTP['RECIPIENT_VALIDATORS'] must be a non-empty list of "
                    "dotted paths.",
                    hint="Without a validator every recipient is refused.",
                    id="inbound_smtp.E003",
                )
            ],
        ),
        (
            {"STORAGE": "nowhere"},
            [
                Error(
                    "INBOUND_SMTP['STORAGE'] names 'nowhere', which is not in STORAGES.",
                    hint="Known aliases: default, staticfiles.",
                    id="inbound_smtp.E004",
                )
            ],
        ),
        (
            {"PLUS_DELIMITER": "++"},
            [
                Error(
                    "INBOUND_SMTP['PLUS_DELIMITER'] must be one character, or empty.",
                    hint="Got '++'.",
                    id="inbound_smtp.E005",
                )
            ],
        ),
        (
            {"BIND": "localhost"},
            [
                Error(
                    "INBOUND_SMTP['BIND'] must be 'HOST:PORT'.",
                    hint="Got 'localhost'.",
                    id="inbound_smtp.E006",
                )
            ],
        ),
        (
            {"BIND": "0.0.0.0:25"},
            [
                Warning(
                    "INBOUND_SMTP['BIND'] uses privileged port 25.",
                    hint="Binding it needs root or CAP_NET_BIND_SERVICE; consider a high port "
                    "behind a redirect.",
                    id="inbound_smtp.W002",
                )
            ],
        ),
    ],
)
def test_check_catalogue(value: object, expected: list[object]) -> None:
    with override_settings(INBOUND_SMTP=value):
        assert check_settings() == expected


def test_unimportable_validator_is_reported() -> None:
    with override_settings(INBOUND_SMTP={"RECIPIENT_VALIDATORS": ["no.such.validator"]}):
        (error,) = check_settings()
    assert error.id == "inbound_smtp.E003"
    assert "no.such.validator" in str(error.hint)

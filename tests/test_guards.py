"""Guards: migrations in step with models, README in step with settings and checks."""

from __future__ import annotations

import re
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import override_settings

import django_inbound_smtp
from django_inbound_smtp.conf import DEFAULTS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "auto_field", ["django.db.models.AutoField", "django.db.models.BigAutoField"]
)
def test_no_missing_migrations_whatever_the_project_default(auto_field: str) -> None:
    with override_settings(DEFAULT_AUTO_FIELD=auto_field):
        out = StringIO()
        call_command("makemigrations", "inbound_smtp", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()


def test_migration_numbers_are_unique() -> None:
    names = [p.name for p in (ROOT / "django_inbound_smtp" / "migrations").glob("[0-9]*.py")]
    numbers = [n.split("_", 1)[0] for n in names]
    assert len(numbers) == len(set(numbers))


def _readme_table_keys() -> list[str]:
    section = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([A-Z0-9_]+)` \|", section, flags=re.MULTILINE)


def test_readme_configuration_table_lists_exactly_the_settings() -> None:
    assert sorted(_readme_table_keys()) == sorted(DEFAULTS)


def test_readme_lists_every_check_id() -> None:
    source = (ROOT / "django_inbound_smtp" / "checks.py").read_text()
    ids = set(re.findall(r'"(E0\d\d|W0\d\d)"', source)) | set(
        re.findall(r"inbound_smtp\.(E0\d\d|W0\d\d)", source)
    )
    assert ids
    for check_id in ids:
        assert f"`inbound_smtp.{check_id}`" in README, check_id


def test_quickstart_starts_with_the_two_commands() -> None:
    quickstart = README.split("## Quickstart", 1)[1]
    commands = re.findall(r"^make \w+$", quickstart, flags=re.MULTILINE)
    assert commands[:2] == ["make run", "make test"]


def test_changelog_has_a_pending_section_on_top() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    first_section = re.search(r"^## (.+)$", changelog, flags=re.MULTILINE)
    assert first_section is not None
    assert first_section.group(1) == "Pending"
    assert django_inbound_smtp.__version__


def test_tests_never_turn_sender_checks_on_by_replacing_the_settings() -> None:
    # conftest keeps SENDER_CHECKS and DNS from the test settings when a test replaces
    # INBOUND_SMTP without naming them: otherwise the checks would be on (the product's
    # default) and would ask the machine's resolver.
    from django.test import override_settings

    from django_inbound_smtp.conf import get_settings

    with override_settings(INBOUND_SMTP={"HOSTNAME": "mx.test"}):
        assert get_settings().DNS.nameservers == ("127.0.0.1:9",)
        assert all(v == "off" for v in get_settings().SENDER_CHECKS.values())

"""The admin speed benchmark's own code, on a few seeded messages (no timings asserted).

``benchmarks/seed_messages.py`` fills the test database through the app's own parser,
and ``benchmarks/admin_speed.py`` requests every page it measures, so both keep working
as the admin changes. Their numbers at 100,000 messages are in the README.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from django.contrib.auth.models import User
from django.test import Client

from django_inbound_smtp.models import Attachment, InboundMessage, InboundRecipient, SenderCheck

BENCH_DIR = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def bench() -> Iterator[dict[str, ModuleType]]:
    sys.path.insert(0, str(BENCH_DIR))
    try:
        yield {name: importlib.import_module(name) for name in ("seed_messages", "admin_speed")}
    finally:
        sys.path.remove(str(BENCH_DIR))


def test_seeded_rows_look_stored_and_every_measured_page_renders(
    db: None, bench: dict[str, ModuleType]
) -> None:
    seed, speed = bench["seed_messages"], bench["admin_speed"]
    assert seed.seed(60, batch=25, seed_value=3)["messages"] == 60
    assert seed.sender_checks(batch=25, seed_value=3) == 60
    assert InboundMessage.objects.count() == SenderCheck.objects.count() == 60
    assert InboundRecipient.objects.count() >= 60
    assert Attachment.objects.exists()
    message = InboundMessage.objects.exclude(text="").first()
    assert message is not None
    assert message.subject in message.raw_bytes.decode()  # the raw file is that message
    assert message.parsed_at is not None
    assert message.headers

    client = Client()
    client.force_login(User.objects.create_superuser("bench", "b@x.test", "pw"))
    for name, url in speed.pages():
        result = speed.measure(client, url, 1)
        assert result["queries"] <= 16, name

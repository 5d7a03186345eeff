"""Tier 5: ``smtpd`` on Django's psycopg connection pool (``OPTIONS["pool"]``, PostgreSQL).

With the pool, Django refuses persistent connections (``CONN_MAX_AGE`` must be 0); each of
the server's database threads and processing threads then holds one pooled connection
for as long as it works. A real ``smtpd`` subprocess stores and processes mail that way
and stops cleanly.
"""

from __future__ import annotations

import smtplib
import time
from pathlib import Path

import pytest
from django.db import connection

from django_inbound_smtp.models import InboundMessage, Mailbox
from tests.helpers import subprocess_env
from tests.smtpd_process import Smtpd, logged_settings

POOLED = """
DATABASES["default"]["OPTIONS"] = {
    **DATABASES["default"].get("OPTIONS", {}),
    "pool": {"min_size": 1, "max_size": 8, "timeout": 10},
}
DATABASES["default"]["CONN_MAX_AGE"] = 0
"""


@pytest.mark.slow
def test_smtpd_stores_and_processes_on_the_psycopg_pool(transactional_db, tmp_path: Path) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("Django's connection pool is PostgreSQL's (psycopg)")
    Mailbox.objects.create(address="*@our.test")
    server = Smtpd(subprocess_env(**logged_settings(tmp_path, POOLED)))
    try:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
            for index in range(20):
                body = f"Subject: pooled {index}\r\n\r\nbody\r\n"
                assert client.sendmail("a@x.test", [f"u{index}@our.test"], body) == {}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if InboundMessage.objects.filter(status="processed").count() == 20:
                break
            time.sleep(0.1)
        assert InboundMessage.objects.filter(status="processed").count() == 20, server.text()
    finally:
        returncode = server.stop()
    assert returncode == 0, server.text()
    assert "Traceback" not in server.text()

"""Helpers shared by the wire tests."""

from __future__ import annotations

import smtplib


class GuardedSMTP(smtplib.SMTP):
    """An ``smtplib`` client that fails the test on a leaked exception reply.

    aiosmtpd's default error path answers ``500 Error: (ExcType) text``: a permanent
    failure carrying internals. Our hooks must never let one out (STYLE §4).
    """

    def getreply(self) -> tuple[int, bytes]:
        code, message = super().getreply()
        assert not message.startswith(b"Error: ("), f"leaked exception: {code} {message!r}"
        return code, message


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for a child process (smtpd, a Celery worker) that must use the test
    database this test session created, and the same scratch folder (media)."""
    import os
    from pathlib import Path

    from django.db import connection

    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    name = connection.settings_dict["NAME"]
    if connection.vendor == "postgresql":
        env["INBOUND_TEST_PG_NAME"] = name
    else:
        env["INBOUND_TEST_DB_SQLITE_MAIN"] = name
    env.update(extra)
    return env

"""Tiers 2 and 5: ``manage.py inbound_status``, its output and its Nagios exit codes,
and the observability settings' system checks."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from django_inbound_smtp.checks import check_settings
from django_inbound_smtp.conf import get_settings
from django_inbound_smtp.models import InboundMessage
from django_inbound_smtp.monitoring import readiness
from django_inbound_smtp.monitoring.status import error_summary
from tests.helpers import subprocess_env
from tests.smtpd_process import ROOT

Status = InboundMessage.Status
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "inbox/receivers.py", line 12, in on_mail\n'
    "    ticket = lookup[key]\n"
    "KeyError: 'ticket\x1b[31m'\n"
)


def _message(queue_id: str, *, age: float, status: str = Status.PROCESSED, **fields):
    return InboundMessage.objects.create(
        queue_id=queue_id,
        status=status,
        size=100,
        raw_file=f"{queue_id}.eml",
        received_at=timezone.now() - timedelta(seconds=age),
        **fields,
    )


def _status(*args: str) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("inbound_status", *args, stdout=out)
    except SystemExit as exit:
        return int(exit.code or 0), out.getvalue()
    return 0, out.getvalue()


def test_levels_follow_the_oldest_waiting_message(db) -> None:
    _message("DONE1", age=7200)
    _message("DONE2", age=30)
    _message(
        "BROKEN1",
        age=600,
        status=Status.FAILED,
        processed_at=timezone.now() - timedelta(seconds=500),
        error=TRACEBACK,
    )
    code, out = _status()
    assert code == 0
    assert out.startswith("INBOUND OK: nothing waits for processing")
    # The failure shows its exception line, terminal escapes defused.
    assert "last failure:" in out
    assert "BROKEN1: KeyError: 'ticket?[31m'" in out
    assert "\x1b" not in out

    _message("NEW", age=60, status=Status.RECEIVED)
    assert _status()[0] == 0
    _message("SLOW", age=900, status=Status.PROCESSING)
    code, out = _status()
    assert code == 1
    assert out.startswith("INBOUND WARNING: oldest waiting message SLOW is 9")
    _message("STUCK", age=7200, status=Status.RECEIVED)
    code, out = _status("--json")
    assert code == 2
    body = json.loads(out)
    assert body["level"] == "CRITICAL"
    assert body["exit_code"] == 2
    assert body["counts"] == {
        "received": 2,
        "processing": 1,
        "processed": 2,
        "failed": 1,
        "duplicate": 0,
    }
    assert body["waiting"] == 3
    assert body["oldest_waiting"]["queue_id"] == "STUCK"
    assert 7200 <= body["oldest_waiting"]["age_seconds"] < 7300
    assert body["last_failure"]["queue_id"] == "BROKEN1"
    assert body["last_failure"]["error"] == "KeyError: 'ticket?[31m'"
    newest = InboundMessage.objects.order_by("-received_at")[0]
    assert body["last_received_at"] == newest.received_at.isoformat()
    # Thresholds from the command line win over the settings.
    assert _status("--warning", "10000", "--critical", "20000")[0] == 0
    with override_settings(INBOUND_SMTP={"STUCK_WARNING_AFTER": 60, "STUCK_CRITICAL_AFTER": 9000}):
        assert _status()[0] == 1


def _run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "django", "inbound_status"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_exit_codes_of_the_real_command(transactional_db) -> None:
    _message("FINE", age=10)
    done = _run(subprocess_env())
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("INBOUND OK")

    _message("STUCK", age=3 * 3600, status=Status.RECEIVED)
    done = _run(subprocess_env())
    assert done.returncode == 2, done.stderr
    assert done.stdout.startswith("INBOUND CRITICAL: oldest waiting message STUCK is")

    # A database that cannot be reached: UNKNOWN (3), in one line, no traceback.
    if connection.vendor == "postgresql":
        broken = subprocess_env(INBOUND_TEST_PG_PORT="9")  # nothing listens there
    else:
        broken = subprocess_env(INBOUND_TEST_DB_SQLITE_MAIN="/nonexistent/folder/db.sqlite3")
    done = _run(broken)
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert done.stdout.startswith("INBOUND UNKNOWN: cannot read the queue: OperationalError")
    assert "Traceback" not in done.stderr


def test_error_summary() -> None:
    assert error_summary(TRACEBACK) == "KeyError: 'ticket?[31m'"
    assert error_summary("abandoned by its worker 5 times; not retried again") == (
        "abandoned by its worker 5 times; not retried again"
    )
    assert error_summary("") == ""


def test_disk_space_check_measures_the_real_file_system(tmp_path) -> None:
    with override_settings(INBOUND_SMTP={"SPOOL_DIR": str(tmp_path / "spool")}):
        ok, detail = readiness.disk_space()
        assert ok, detail
        assert str(tmp_path / "spool") in detail
    # More free space than any disk has: not ready, and the detail says where.
    with override_settings(
        INBOUND_SMTP={"SPOOL_DIR": str(tmp_path / "spool"), "READY_MIN_FREE_SPACE": 2**62}
    ):
        ok, detail = readiness.disk_space()
        assert not ok
        assert detail.startswith(f"below {2**62} bytes: {tmp_path / 'spool'}: ")


def test_ready_min_free_space_defaults_to_min_free_space() -> None:
    with override_settings(INBOUND_SMTP={"MIN_FREE_SPACE": 12345}):
        assert get_settings().READY_MIN_FREE_SPACE == 12345
    with override_settings(INBOUND_SMTP={"MIN_FREE_SPACE": 1, "READY_MIN_FREE_SPACE": 7}):
        assert get_settings().READY_MIN_FREE_SPACE == 7


def _ids(settings: dict[str, object]) -> list[str]:
    with override_settings(INBOUND_SMTP=settings):
        return [message.id or "" for message in check_settings()]


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"METRICS_BIND": "127.0.0.1:9125", "READY_MIN_FREE_SPACE": 0}, []),
        ({"METRICS_BIND": "nowhere"}, ["inbound_smtp.E006"]),
        ({"METRICS_CACHE": -1}, ["inbound_smtp.E002"]),
        ({"READY_TIMEOUT": 0}, ["inbound_smtp.E002"]),
        ({"STUCK_CRITICAL_AFTER": "soon"}, ["inbound_smtp.E002"]),
        ({"STUCK_WARNING_AFTER": 3600, "STUCK_CRITICAL_AFTER": 60}, ["inbound_smtp.E049"]),
        ({"READY_MIN_FREE_SPACE": -5}, ["inbound_smtp.E050"]),
        ({"READY_MIN_FREE_SPACE": "1G"}, ["inbound_smtp.E050"]),
    ],
)
def test_observability_checks(settings: dict[str, object], expected: list[str]) -> None:
    assert _ids(settings) == expected


def test_metrics_bind_without_prometheus_client_warns(monkeypatch) -> None:
    import django_inbound_smtp.metrics as metrics_module

    # The one fault we cannot make here: the package missing from this environment
    # (tests/test_metrics_optional.py runs a real process without it).
    monkeypatch.setattr(metrics_module, "available", lambda: False)
    assert _ids({"METRICS_BIND": "127.0.0.1:9125"}) == ["inbound_smtp.W010"]

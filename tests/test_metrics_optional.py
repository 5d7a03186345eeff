"""Tier 5: prometheus-client is optional. Without it ``smtpd`` serves mail as always, and
``smtpd --metrics`` stops with one sentence saying what to install.

The package is installed in the test environment; the child process is made to lack it
by a ``None`` entry in ``sys.modules`` (how Python marks a module as not importable),
set before Django starts, so every ``import prometheus_client`` fails as if it were
not installed.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from django_inbound_smtp.models import InboundMessage, Mailbox
from tests.helpers import GuardedSMTP, subprocess_env
from tests.smtpd_process import BANNER, ROOT

pytestmark = [pytest.mark.integration]

WITHOUT_PROMETHEUS = (
    "import sys; sys.modules['prometheus_client'] = None; "
    "from django.core.management import execute_from_command_line; "
    "execute_from_command_line(['manage.py', *sys.argv[1:]])"
)


def _smtpd(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WITHOUT_PROMETHEUS, "smtpd", "127.0.0.1:0", "--skip-checks", *args],
        cwd=ROOT,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_metrics_flag_without_prometheus_client_is_one_clear_error(transactional_db) -> None:
    process = _smtpd("--metrics", "127.0.0.1:0")
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 1, output
    assert "needs prometheus-client: pip install 'django-inbound-smtp[metrics]'" in output
    assert "Traceback" not in output
    assert not BANNER.search(output)


def test_without_prometheus_client_mail_is_served_as_always(transactional_db) -> None:
    Mailbox.objects.create(address="user@our.test")
    process = _smtpd()
    try:
        assert process.stdout is not None
        port = 0
        for line in process.stdout:
            if match := BANNER.match(line.rstrip("\n")):
                port = int(match[1])
                break
        assert port, "no banner"
        with GuardedSMTP("127.0.0.1", port, timeout=30) as client:
            client.sendmail("a@example.org", ["user@our.test"], b"Subject: x\r\n\r\nbody\r\n")
        process.terminate()
        rest, _ = process.communicate(timeout=60)
        assert process.returncode == 0, rest
        assert "Traceback" not in rest
        assert not re.search(r"Metrics and health", rest)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=30)
    assert InboundMessage.objects.count() == 1

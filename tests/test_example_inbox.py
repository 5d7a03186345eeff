"""The example project's ticket comments (``example_project/inbox/tests.py``) pass.

Those tests need the example project's settings (its ``inbox`` app and migrations),
which this suite's ``tests.settings`` does not have, so they run in a pytest
subprocess with ``--ds=example_project.settings`` and their own SQLite file and media
folder under ``tmp_path``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INBOX_TESTS = ROOT / "example_project" / "inbox" / "tests.py"
# The test functions in example_project/inbox/tests.py: a test that is not collected
# (or skipped) must not pass unnoticed.
EXPECTED_PASSED = 11
TIMEOUT = 180


def test_example_inbox_tests_pass(tmp_path: Path) -> None:
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "example_project.settings"
    env["EXAMPLE_DB_PATH"] = str(tmp_path / "example.sqlite3")
    env["EXAMPLE_MEDIA_ROOT"] = str(tmp_path / "media")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    # No broker: DISPATCH "auto" stays inline whatever the caller's environment says.
    env.pop("CELERY_BROKER_URL", None)
    # No DNS from the tests (the example's sender checks are on by default).
    env["EXAMPLE_SENDER_CHECKS"] = "off"
    # The plugins named in pyproject's ini options (pytest-django, pytest-asyncio) must load.
    env.pop("PYTEST_DISABLE_PLUGIN_AUTOLOAD", None)
    env.pop("PYTEST_ADDOPTS", None)

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(INBOX_TESTS),
            "-q",
            "-p",
            "no:cacheprovider",
            "--ds=example_project.settings",
            f"--rootdir={ROOT}",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )

    assert result.returncode == 0, result.stdout
    summary = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(rf"{EXPECTED_PASSED} passed in [\d.]+s", summary), result.stdout

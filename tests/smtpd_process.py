"""``manage.py smtpd`` as a real subprocess, for the crash and ``--workers`` tests."""

from __future__ import annotations

import functools
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BANNER = re.compile(r"^Inbound [SL]MTP server listening on 127\.0\.0\.1:(\d+)(?: \((.*)\))?$")
WORKER_PIDS = re.compile(r"^Worker pids: ([\d, ]+)$")
# What a worker's log lines start with (smtp/_worker.label_logs).
WORKER_LINE = re.compile(r"^\[worker (\d+), pid (\d+)\] (.*)$")

# The test settings send our logs nowhere; these send them to stdout, one message a
# line, so a test can see which worker served a session.
_LOGGED_SETTINGS = """\
from tests.settings import *  # noqa: F403

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout"}},
    "loggers": {"django_inbound_smtp": {"handlers": ["console"], "level": "INFO"}},
}
"""


def logged_settings(folder: Path, extra: str = "") -> dict[str, str]:
    """Environment entries for a settings module in ``folder``: the test settings, our
    logs on stdout, then ``extra`` (Python source, e.g. an ``INBOUND_SMTP`` change)."""
    (folder / "logged_settings.py").write_text(_LOGGED_SETTINGS + extra)
    return {
        "DJANGO_SETTINGS_MODULE": "logged_settings",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(folder)]),
    }


# Settings of a child project with its database and media folder in a folder an
# unprivileged user owns (it creates the SQLite WAL files and the spool).
_OWN_FOLDER_SETTINGS = """\
from tests.settings import *  # noqa: F403

DATABASES = {{"default": {{
    "ENGINE": "django.db.backends.sqlite3",
    "NAME": {database!r},
    "OPTIONS": {{"timeout": 20, "init_command": "PRAGMA journal_mode=WAL"}},
}}}}
STORAGES = {{**STORAGES, "default": {{  # noqa: F405
    "BACKEND": "django.core.files.storage.FileSystemStorage",
    "OPTIONS": {{"location": {media!r}}},
}}}}
INBOUND_SMTP = {{**INBOUND_SMTP, "TLS_CERTFILE": {cert!r}, "TLS_KEYFILE": {key!r}}}  # noqa: F405
"""


@functools.cache
def _why_nobody_cannot_run_python() -> str:
    """Empty when this interpreter starts as ``nobody``, else the reason it does not.
    A pyenv Python built with a shared libpython under root's home (0700), as tox's
    Python 3.13 here, cannot: the unprivileged child would die before any of our code."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return "setpriv (util-linux) is missing"
    nobody = pwd.getpwnam("nobody")
    result = subprocess.run(
        [
            setpriv,
            f"--reuid={nobody.pw_uid}",
            f"--regid={nobody.pw_gid}",
            "--clear-groups",
            sys.executable,
            "-c",
            "import django, django_inbound_smtp",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = result.stderr.strip().splitlines()
    return "" if result.returncode == 0 else (lines[-1] if lines else f"exit {result.returncode}")


def skip_unless_nobody_can_run_python() -> None:
    """For the tests that run the server as ``nobody``: ``make test`` and ``make
    test-postgres`` run them with an interpreter ``nobody`` can start."""
    why = _why_nobody_cannot_run_python()
    if why:
        pytest.skip(f"this Python cannot run as nobody here: {why}")


@pytest.fixture
def own_folder() -> Iterator[Path]:
    """A folder the unprivileged user can reach: pytest's own are root's alone (0700)."""
    skip_unless_nobody_can_run_python()
    with tempfile.TemporaryDirectory(prefix="inbound-service-") as name:
        os.chmod(name, 0o755)
        yield Path(name)


def project_owned_by(
    user: pwd.struct_passwd,
    folder: Path,
    *,
    settings_folder: Path,
    certfile: Path,
    keyfile: Path,
    extra: str = "",
) -> dict[str, str]:
    """The environment of a child project whose SQLite database (``folder/db.sqlite3``)
    and media folder (``folder/media``) belong to ``user``: its settings module is
    written to ``settings_folder`` (the test settings, that database and media, our TLS
    files, then ``extra``), it is migrated, it has the mailbox user@our.test, and then
    everything in ``folder`` is handed to ``user``."""
    (folder / "media").mkdir(parents=True)
    (settings_folder / "child_settings.py").write_text(
        _OWN_FOLDER_SETTINGS.format(
            database=str(folder / "db.sqlite3"),
            media=str(folder / "media"),
            cert=str(certfile),
            key=str(keyfile),
        )
        + extra
    )
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="child_settings",
        PYTHONPATH=os.pathsep.join([str(ROOT), str(settings_folder)]),
    )
    manage = [sys.executable, "-m", "django"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    subprocess.run(
        [*manage, "inbound_mailbox", "add", "user@our.test"], cwd=ROOT, env=env, check=True
    )
    for path in [folder, *folder.rglob("*")]:
        os.chown(path, user.pw_uid, user.pw_gid)
    return env


class Smtpd:
    """``python -m django smtpd 127.0.0.1:0 --skip-checks ARGS`` as a subprocess; its
    output is drained by a thread (a full pipe would block the server) and kept, for
    the assertions and the failure messages."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "django", "smtpd", "127.0.0.1:0", "--skip-checks", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output: list[str] = []
        self.port = 0
        self.pids: list[int] = []
        self.banner_notes = ""
        self._changed = threading.Condition()
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()
        if not self.wait_for(WORKER_PIDS if "--workers" in args else BANNER, timeout=60):
            self.kill()
            raise AssertionError(f"no banner; output so far: {self.text()}")

    def _drain(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout:
            for line in self.process.stdout:
                with self._changed:
                    if (match := BANNER.match(line.rstrip("\n"))) and not self.port:
                        self.port, self.banner_notes = int(match[1]), match[2] or ""
                    if match := WORKER_PIDS.match(line.rstrip("\n")):
                        self.pids = [int(pid) for pid in match[1].split(", ")]
                    self.output.append(line)
                    self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, pattern: re.Pattern[str], *, timeout: float = 30) -> re.Match[str] | None:
        """The first output line matching ``pattern``, waiting for it up to ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.output:
                    if match := pattern.search(line.rstrip("\n")):
                        return match
                left = deadline - time.monotonic()
                if left <= 0 or not self._drainer.is_alive():
                    return None
                self._changed.wait(min(left, 0.5))

    def worker_lines(self) -> list[tuple[int, int, str]]:
        """``(worker index, pid, message)`` of every worker log line so far."""
        with self._changed:
            matches = [WORKER_LINE.match(line.rstrip("\n")) for line in self.output]
        return [(int(m[1]), int(m[2]), m[3]) for m in matches if m]

    def text(self) -> str:
        with self._changed:
            return "".join(self.output)

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)  # the whole process, no handler runs
        self.process.wait(30)
        self._drainer.join(10)

    def stop(self) -> int:
        """SIGTERM, then the exit status (killed if it takes over a minute)."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(60)
        finally:
            self.kill()


def gone(pid: int, *, timeout: float = 10) -> bool:
    """Whether process ``pid`` no longer exists (or is a zombie nobody reaped yet)
    within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False

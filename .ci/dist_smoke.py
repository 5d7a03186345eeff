"""Install the built wheel and sdist into new virtualenvs and run the app from each.

``make dist-check`` (and CI) runs this after ``make dist``. For each artifact in the
folder given (default ``dist``), in a temporary folder:

1. a new venv, ``pip install "<artifact>[redis,auth]"``, then ``pip check``;
2. the package is imported from that venv, never from the checkout;
3. a copy of the example project: ``check``, ``migrate``, ``demo_setup``;
4. ``manage.py smtpd`` on a free loopback port: one message to ``demo@example.test`` is
   answered ``250`` and reaches ``processed``; an unknown recipient gets ``550``;
5. the ``redis`` extra makes a Celery app reach the Redis broker at 127.0.0.1:6379
   (plain ``celery`` lacks what kombu's Redis transport imports).

Standard library only; exits non-zero with the failing step's output.
"""

from __future__ import annotations

import os
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXTRAS = "redis,auth"
PROCESS_TIMEOUT = 60.0

CHECK_PROCESSED = """
from django_inbound_smtp.models import InboundMessage
rows = list(InboundMessage.objects.values_list("status", flat=True))
print("statuses:" + ",".join(rows))
"""

CHECK_IMPORT = """
import sys
import django_inbound_smtp
location = django_inbound_smtp.__file__
assert location.startswith(sys.prefix), f"imported from {location}, not from {sys.prefix}"
print(django_inbound_smtp.__version__, location)
"""

CHECK_REDIS = """
from celery import Celery
app = Celery("dist_smoke", broker="redis://127.0.0.1:6379/15")
with app.connection_for_write() as connection:
    connection.ensure_connection(max_retries=3)
print("celery reached redis")
"""


def run(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    print("+", " ".join(str(a) for a in args), flush=True)
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        sys.exit(f"failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result.stdout


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + PROCESS_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"smtpd exited with {process.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"smtpd did not listen on {port} within {PROCESS_TIMEOUT:.0f} s")


def send_mail(port: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("dist-smoke.test")
        client.mail("sender@example.org")
        code, reply = client.rcpt("nobody@example.test")
        if code != 550:
            sys.exit(f"unknown recipient answered {code} {reply!r}, expected 550")
        code, reply = client.rcpt("demo@example.test")
        if code != 250:
            sys.exit(f"demo@example.test answered {code} {reply!r}")
        code, reply = client.data(b"Subject: dist smoke\r\n\r\nInstalled from a package.\r\n")
        if code != 250:
            sys.exit(f"DATA answered {code} {reply!r}")


def serve_one_message(python: Path, app: Path, env: dict[str, str]) -> None:
    port = free_port()
    smtpd = subprocess.Popen(
        [str(python), "manage.py", "smtpd", f"127.0.0.1:{port}"], cwd=app, env=env
    )
    try:
        wait_listening(port, smtpd)
        send_mail(port)
        deadline = time.monotonic() + PROCESS_TIMEOUT
        statuses = ""
        while time.monotonic() < deadline:
            output = run(python, "manage.py", "shell", "-c", CHECK_PROCESSED, cwd=app, env=env)
            # Django 6's shell announces its automatic imports on stdout first.
            statuses = output.rsplit("statuses:", 1)[-1].strip()
            if statuses == "processed":
                print("message stored and processed", flush=True)
                return
            time.sleep(0.5)
        sys.exit(f"the message did not reach processed: statuses {statuses!r}")
    finally:
        smtpd.send_signal(signal.SIGTERM)
        try:
            smtpd.wait(timeout=PROCESS_TIMEOUT)
        except subprocess.TimeoutExpired:
            smtpd.kill()


def smoke(artifact: Path, workdir: Path) -> None:
    print(f"\n== {artifact.name}", flush=True)
    venv = workdir / "venv"
    run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    run(python, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    run(python, "-m", "pip", "install", "--quiet", f"{artifact.resolve()}[{EXTRAS}]")
    run(python, "-m", "pip", "check")
    # Run from the work folder: the checkout must not be on sys.path.
    print(run(python, "-c", CHECK_IMPORT, cwd=workdir), end="")
    app = workdir / "app"
    shutil.copytree(
        ROOT / "example_project",
        app,
        ignore=shutil.ignore_patterns("db.sqlite3*", "media", "__pycache__", "celerybeat-*"),
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "PYTHON", "CELERY_", "VIRTUAL_ENV"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="example_project.settings",
        EXAMPLE_DB_PATH=str(workdir / "example.sqlite3"),
        EXAMPLE_MEDIA_ROOT=str(workdir / "media"),
        PYTHONUNBUFFERED="1",
    )
    run(python, "manage.py", "check", "--fail-level", "WARNING", cwd=app, env=env)
    run(python, "manage.py", "migrate", "--noinput", cwd=app, env=env)
    run(python, "manage.py", "demo_setup", cwd=app, env=env)
    serve_one_message(python, app, env)
    print(run(python, "-c", CHECK_REDIS, cwd=workdir), end="")


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "dist")
    artifacts = sorted(folder.glob("*.whl")) + sorted(folder.glob("*.tar.gz"))
    if len(artifacts) != 2:
        sys.exit(f"expected one wheel and one sdist in {folder}, found {artifacts}")
    for artifact in artifacts:
        with tempfile.TemporaryDirectory(prefix="dist-smoke-") as workdir:
            smoke(artifact, Path(workdir))
    print("\nwheel and sdist install and run", flush=True)


if __name__ == "__main__":
    main()

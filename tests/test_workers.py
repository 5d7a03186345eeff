"""Tier 5: ``smtpd --workers N``, worker processes sharing the port under one parent.

Everything real: the command as a subprocess, its workers as its own subprocesses,
clients on loopback. The parent logs to stdout here (``logged_settings``) so the tests
see which worker served each session.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from django.core.management import CommandError, call_command

from django_inbound_smtp.models import InboundMessage, Mailbox
from tests.helpers import Certs, GuardedSMTP, subprocess_env
from tests.smtpd_process import ROOT, Smtpd, gone, logged_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ACCEPTED = re.compile(r"^accepted ([0-9A-F]+) ")


def _send(port: int, count: int, *, tag: str) -> None:
    # A new connection per message: the kernel spreads connections, not messages.
    for n in range(count):
        with GuardedSMTP("127.0.0.1", port, local_hostname="client.test", timeout=30) as client:
            body = f"Subject: {tag} {n}\r\n\r\nmessage {n}\r\n".encode()
            assert client.sendmail("a@example.org", ["user@our.test"], body) == {}


def _served_by(server: Smtpd, *, count: int) -> dict[str, int]:
    """Queue id -> pid of the worker that logged its ``accepted`` line, once ``count``
    were logged (a client may read its 250 before the test reads the log line)."""
    deadline = time.monotonic() + 30
    while True:
        served = {
            match[1]: pid
            for _index, pid, message in server.worker_lines()
            if (match := ACCEPTED.match(message))
        }
        if len(served) >= count or time.monotonic() > deadline:
            return served
        time.sleep(0.05)


@pytest.mark.slow
def test_workers_share_the_port_restart_and_stop_together(transactional_db, tmp_path) -> None:
    Mailbox.objects.create(address="user@our.test")
    server = Smtpd(subprocess_env(**logged_settings(tmp_path)), "--workers", "2")
    try:
        assert server.banner_notes == "2 workers", server.text()
        first, second = server.pids
        assert server.process.pid not in server.pids  # the parent serves nothing

        _send(server.port, 40, tag="before")
        served = _served_by(server, count=40)
        assert len(served) == 40, server.text()
        # Both workers served (40 connections all on one of two: odds of 2^-39).
        assert set(served.values()) == {first, second}
        stored = set(InboundMessage.objects.values_list("queue_id", flat=True))
        assert stored == set(served)

        # A worker dies: the parent starts another in its place; the port stays served.
        os.kill(first, signal.SIGKILL)
        restarted = server.wait_for(re.compile(r"worker 1 restarted \(pid (\d+)\)"))
        assert restarted, server.text()
        replacement = int(restarted[1])
        assert f"worker 1 (pid {first}) exited with status -9" in server.text()
        assert gone(first)
        _send(server.port, 30, tag="after")
        assert InboundMessage.objects.count() == 70
        served = _served_by(server, count=70)
        assert len(served) == 70, server.text()
        assert set(served.values()) <= {first, second, replacement}

        # SIGTERM to the parent: every worker stops gracefully (an idle session is told
        # 421), then the parent exits 0 and leaves no process behind.
        idle = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        assert idle.recv(1024).startswith(b"220 mx.test ESMTP")
        server.process.send_signal(signal.SIGTERM)
        assert idle.recv(1024).startswith(b"421 4.3.2 mx.test Service shutting down")
        idle.close()
        assert server.process.wait(60) == 0, server.text()
    finally:
        server.kill()
    assert "Inbound SMTP server stopped." in server.text()
    assert "Traceback" not in server.text()
    assert all(gone(pid) for pid in (second, replacement))


def test_workers_serve_implicit_tls_and_reload_on_sighup(
    transactional_db, tmp_path, certs: Certs
) -> None:
    settings = f"""
INBOUND_SMTP = {{
    **INBOUND_SMTP,
    "TLS_BIND": "127.0.0.1:0",
    "TLS_CERTFILE": {str(certs.certfile)!r},
    "TLS_KEYFILE": {str(certs.keyfile)!r},
}}
"""
    server = Smtpd(subprocess_env(**logged_settings(tmp_path, settings)), "--workers", "2")
    try:
        assert server.banner_notes == "STARTTLS offered, 2 workers", server.text()
        implicit = server.wait_for(re.compile(r"^Implicit TLS listening on 127\.0\.0\.1:(\d+)$"))
        assert implicit, server.text()
        tls_port = int(implicit[1])
        assert tls_port != server.port
        for _ in range(2):
            with socket.create_connection(("127.0.0.1", tls_port), timeout=10) as raw:
                context = certs.client_context()
                with context.wrap_socket(raw, server_hostname="mx.test") as tls:
                    assert tls.recv(1024).startswith(b"220 mx.test ESMTP")
                    assert isinstance(tls.version(), str)

        server.process.send_signal(signal.SIGHUP)  # forwarded: each worker reloads
        for pid in server.pids:
            line = re.compile(rf"^\[worker \d, pid {pid}\] SIGHUP: TLS certificate reloaded$")
            assert server.wait_for(line), server.text()
        assert server.stop() == 0, server.text()
    finally:
        server.kill()
    assert all(gone(pid) for pid in server.pids)


def test_workers_stop_by_themselves_when_the_parent_is_killed(transactional_db) -> None:
    # SIGKILL leaves the parent no chance to forward anything: each worker sees its
    # channel to the parent close, and stops gracefully rather than live on unsupervised.
    server = Smtpd(subprocess_env(), "--workers", "2")
    try:
        os.kill(server.process.pid, signal.SIGKILL)
        assert server.process.wait(10) == -signal.SIGKILL
        # Within SHUTDOWN_GRACE (5 s in the test settings) and a start-up's margin.
        assert all(gone(pid, timeout=20) for pid in server.pids), server.text()
    finally:
        server.kill()
        for pid in server.pids:
            if not gone(pid, timeout=0.1):
                os.kill(pid, signal.SIGKILL)
    assert "Traceback" not in server.text()


def test_a_worker_that_cannot_start_fails_the_command_once(transactional_db, tmp_path) -> None:
    # A real start-up failure inside the workers, past the parent's own checks: the
    # implicit-TLS listener cannot load its certificate.
    missing = tmp_path / "missing.pem"
    settings = '\nINBOUND_SMTP = {**INBOUND_SMTP, "TLS_BIND": "127.0.0.1:0"}\n'
    env = subprocess_env(**logged_settings(tmp_path, settings))
    command = [sys.executable, "-m", "django", "smtpd", "127.0.0.1:0", "--skip-checks"]
    command += ["--workers", "2", "--tls-cert", str(missing), "--tls-key", str(missing)]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result
    errors = [line for line in result.stderr.splitlines() if line.startswith("CommandError:")]
    assert len(errors) == 1, result.stderr
    assert re.fullmatch(r"CommandError: Cannot listen on 127\.0\.0\.1:\d+: .+\.", errors[0])
    assert "Traceback" not in result.stderr
    assert "restarted" not in result.stdout
    assert "listening" not in result.stdout


def test_a_port_shared_by_another_smtpd_is_refused(transactional_db) -> None:
    # A second `smtpd --workers` must not quietly join the first one's port: the kernel
    # would allow it (same user, SO_REUSEPORT on both), the parent's probe does not.
    with socket.socket() as first:
        first.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        first.bind(("127.0.0.1", 0))
        first.listen()
        port = first.getsockname()[1]
        with pytest.raises(CommandError, match=f"127.0.0.1:{port} is already in use"):
            call_command("smtpd", f"127.0.0.1:{port}", "--workers", "2", "--skip-checks")


def test_workers_need_the_main_thread(transactional_db) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            call_command("smtpd", "127.0.0.1:0", "--workers", "2", "--skip-checks")
        except BaseException as error:  # noqa: BLE001 - handed to the test thread
            errors.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    assert [str(error) for error in errors] == [
        "--workers needs the main thread (it handles the signals)."
    ]


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_workers_must_be_a_count(value: str) -> None:
    with pytest.raises(CommandError, match="workers"):
        call_command("smtpd", "--workers", value, "--skip-checks")


def test_auto_is_the_cores_this_process_may_use(transactional_db) -> None:
    # Pinned to one core (as by taskset or a container's cpuset), `auto` is one
    # process: it serves itself, with no workers.
    process = subprocess.Popen(
        [sys.executable, "-m", "django", "smtpd", "127.0.0.1:0", "--skip-checks"]
        + ["--workers", "auto"],
        cwd=ROOT,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}),
    )
    try:
        assert process.stdout is not None
        banner = next(line for line in process.stdout if "listening on" in line)
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    finally:
        process.kill()
        process.communicate()
    assert re.fullmatch(r"Inbound SMTP server listening on 127\.0\.0\.1:\d+\n", banner)


@pytest.mark.parametrize(
    ("command", "worker_prefix"),
    [
        # Started as `python -X utf8 manage.py smtpd ...`: the same, options included.
        ("smtpd", lambda script: [sys.executable, "-X", "utf8", str(script)]),
        # Called from code for another command line: `python -m django`.
        ("runserver", lambda script: [sys.executable, "-m", "django"]),
    ],
)
def test_workers_start_from_the_entry_point_the_parent_started_from(
    tmp_path, command: str, worker_prefix
) -> None:
    script = tmp_path / "manage.py"
    script.write_text(
        "import json\n"
        "from django_inbound_smtp.smtp.workers import entry_point\n"
        "print(json.dumps(entry_point('smtpd')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-X", "utf8", str(script), command, "127.0.0.1:0"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(result.stdout) == worker_prefix(script)


# A stand-in for a worker: reports ready, then dies at once, every time. A real `smtpd`
# worker cannot be made to crash-loop without breaking the code under test; the
# supervisor's contract (a command line, a channel fd, one JSON line) is all it sees.
CRASHING_WORKER = """
import json, os, socket, sys
channel = socket.socket(fileno=int(sys.argv[1]))
channel.sendall(json.dumps({"pid": os.getpid()}).encode() + b"\\n")
sys.exit(3)
"""


async def test_a_crash_loop_backs_off_and_a_stop_ends_it(caplog) -> None:
    from django_inbound_smtp.smtp.workers import Supervisor, Worker

    caplog.set_level(logging.INFO, logger="django_inbound_smtp.smtp.workers")
    supervisor = Supervisor(
        count=1, command=lambda _index, fd: [sys.executable, "-c", CRASHING_WORKER, str(fd)]
    )
    started: list[list[Worker]] = []
    running = asyncio.create_task(supervisor.run(started.append))
    deadline = asyncio.get_running_loop().time() + 30
    while caplog.text.count("starting another in") < 3:
        assert asyncio.get_running_loop().time() < deadline, caplog.text
        await asyncio.sleep(0.05)
    os.kill(os.getpid(), signal.SIGTERM)  # caught by the supervisor while it runs
    await asyncio.wait_for(running, 10)
    assert len(started) == 1  # the banner's moment came once
    delays = re.findall(r"exited with status 3; starting another in ([\d.]+) s", caplog.text)
    assert delays[:3] == ["0.5", "1.0", "2.0"]  # doubling, not spinning

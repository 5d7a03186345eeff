"""Running as a service: bind as root then drop privileges; systemd socket activation.

Everything real: ``manage.py smtpd`` as a subprocess, a privileged port on loopback, a
TLS key only root can read, ``systemd-socket-activate`` handing over a listening socket.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from django_inbound_smtp.models import InboundMessage, Mailbox
from django_inbound_smtp.smtp import listeners
from tests.helpers import Certs, GuardedSMTP, subprocess_env
from tests.observe import get
from tests.smtpd_process import ROOT, gone, project_owned_by, skip_unless_nobody_can_run_python
from tests.smtpd_process import own_folder as own_folder  # a fixture

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BANNER = re.compile(r"Inbound SMTP server listening on 127\.0\.0\.1:(\d+)")
NOBODY = "nobody"
DJANGO = [sys.executable, "-m", "django"]


def _free_privileged_port() -> int:
    for port in range(700, 1000):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.fail("no free port below 1024 on 127.0.0.1")


def _ids(pid: int) -> dict[str, list[int]]:
    status = Path(f"/proc/{pid}/status").read_text()
    return {
        key: [int(value) for value in rest.split()]
        for key, rest in (line.split(":", 1) for line in status.splitlines())
        if key in ("Uid", "Gid", "Groups")
    }


def _spawn(command: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """``command`` started in the project folder, its output (stderr too) to be read
    by ``_wait_banner`` and kept by ``_stop``."""
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_banner(process: subprocess.Popen[str], output: list[str]) -> int:
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        output.append(line)
        if match := BANNER.search(line):
            return int(match[1])
    process.kill()
    pytest.fail("smtpd did not start:\n" + "".join(output))


def _worker_pids(process: subprocess.Popen[str], output: list[str]) -> list[int]:
    assert process.stdout is not None
    line = process.stdout.readline()
    output.append(line)
    assert line.startswith("Worker pids: "), "".join(output)
    return [int(pid) for pid in line.removeprefix("Worker pids: ").split(", ")]


def _stop(process: subprocess.Popen[str], output: list[str]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    if process.stdout is not None:
        with process.stdout:
            output += process.stdout.readlines()


def _connect_once_listening(port: int) -> GuardedSMTP:
    """A client of ``port``, retried until systemd-socket-activate listens (30 s)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return GuardedSMTP("127.0.0.1", port, local_hostname="client.test", timeout=60)
        except ConnectionRefusedError:
            assert time.monotonic() < deadline, "systemd-socket-activate did not listen"
            time.sleep(0.1)


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs a root test run")
@pytest.mark.parametrize("workers", [1, 2])
def test_binds_a_privileged_port_as_root_then_serves_as_nobody(
    tmp_path: Path, certs: Certs, own_folder: Path, workers: int
):
    """Bound as root (port < 1024, a key only root may read), then every uid, gid and
    supplementary group is the unprivileged user's before mail is served; STARTTLS
    still works with the key read before the drop, and mail is stored by that user.
    With ``--workers`` each worker drops; the supervisor, which serves nothing, stays
    root to restart them."""
    nobody = pwd.getpwnam(NOBODY)
    folder = own_folder
    os.chmod(certs.keyfile, 0o600)  # root's alone
    env = project_owned_by(
        nobody, folder, settings_folder=tmp_path, certfile=certs.certfile, keyfile=certs.keyfile
    )
    port = _free_privileged_port()
    process = _spawn(
        [
            *DJANGO,
            "smtpd",
            f"127.0.0.1:{port}",
            "--skip-checks",
            "--user",
            NOBODY,
            "--workers",
            str(workers),
        ],
        env,
    )
    output: list[str] = []
    try:
        assert _wait_banner(process, output) == port
        servers = [process.pid] if workers == 1 else _worker_pids(process, output)
        assert len(servers) == workers
        for pid in servers:
            ids = _ids(pid)
            assert ids["Uid"] == [nobody.pw_uid] * 4, ids  # real, effective, saved, fs
            assert ids["Gid"] == [nobody.pw_gid] * 4, ids
            assert ids["Groups"] == [nobody.pw_gid], ids

        with GuardedSMTP("127.0.0.1", port, local_hostname="client.test", timeout=30) as client:
            client.starttls(context=certs.client_context())
            refused = client.sendmail(
                "a@example.org", ["user@our.test"], b"Subject: hi\r\n\r\nx\r\n"
            )
            assert refused == {}
    finally:
        _stop(process, output)
    assert process.returncode == 0, "".join(output)
    with sqlite3.connect(folder / "db.sqlite3") as db:
        rows = db.execute("SELECT subject, tls FROM inbound_smtp_inboundmessage").fetchall()
    assert rows == [("hi", 1)]
    # Everything the server wrote belongs to the unprivileged user.
    written = [path for path in (folder / "media").rglob("*") if path.is_file()]
    assert written
    assert {path.stat().st_uid for path in written} == {nobody.pw_uid}


def test_user_without_root_is_a_clear_error(transactional_db) -> None:
    """Run as ``nobody`` (when the tests run as root) or as the test user: asking for
    another user cannot work, and says why instead of serving as the wrong user."""
    command = [sys.executable, "-m", "django", "smtpd", "127.0.0.1:0", "--skip-checks"]
    env = subprocess_env()
    if os.geteuid() == 0:
        skip_unless_nobody_can_run_python()
        # Any unprivileged user will do: setpriv runs the command as nobody.
        setpriv = shutil.which("setpriv")
        assert setpriv, "setpriv (util-linux) is missing"
        nobody = pwd.getpwnam(NOBODY)
        command = [
            setpriv,
            f"--reuid={nobody.pw_uid}",
            f"--regid={nobody.pw_gid}",
            "--clear-groups",
            *command,
        ]
    result = subprocess.run(
        [*command, "--user", "root"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "--user/--group need smtpd to start as root" in result.stderr


@pytest.mark.django_db(transaction=True)
def test_serves_the_socket_systemd_passes(tmp_path: Path) -> None:
    """``systemd-socket-activate`` binds, and starts smtpd at the first connection with
    the listening socket as descriptor 3 (``LISTEN_FDS``); the mail is stored."""
    activate = shutil.which("systemd-socket-activate")
    assert activate, "systemd-socket-activate (Debian package systemd) is missing"
    Mailbox.objects.create(address="user@our.test")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = subprocess_env()
    process = _spawn(
        [
            activate,
            f"--listen=127.0.0.1:{port}",
            "--fdname=smtp",
            *(f"--setenv={key}" for key in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH")),
            *(f"--setenv={key}" for key in env if key.startswith("INBOUND_TEST_")),
            *DJANGO,
            "smtpd",
            "--skip-checks",
        ],
        env,
    )
    output: list[str] = []
    try:
        # The socket listens before smtpd runs: this connection starts it.
        client = _connect_once_listening(port)
        with client:
            refused = client.sendmail(
                "a@example.org", ["user@our.test"], b"Subject: sd\r\n\r\nx\r\n"
            )
            assert refused == {}
        assert _wait_banner(process, output) == port
    finally:
        _stop(process, output)
        assert gone(process.pid)
    assert list(InboundMessage.objects.values_list("subject", flat=True)) == ["sd"]


def test_with_sockets_passed_only_those_are_served(tmp_path: Path, certs: Certs) -> None:
    """systemd passes a submission socket only: smtpd serves it and binds nothing of
    its own, not even the address on its command line (the default SMTP listener)."""
    activate = shutil.which("systemd-socket-activate")
    assert activate, "systemd-socket-activate (Debian package systemd) is missing"
    passed, default = _free_ports(2)
    env = subprocess_env()
    process = subprocess.Popen(
        [
            activate,
            f"--listen=127.0.0.1:{passed}",
            "--fdname=submission",
            *(f"--setenv={key}" for key in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH")),
            *(f"--setenv={key}" for key in env if key.startswith("INBOUND_TEST_")),
            sys.executable,
            "-m",
            "django",
            "smtpd",
            f"127.0.0.1:{default}",
            f"--tls-cert={certs.certfile}",
            f"--tls-key={certs.keyfile}",
            "--skip-checks",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    try:
        client = _connect_once_listening(passed)
        with client:
            code, _text = client.ehlo()
            assert code == 250
            assert client.has_extn("starttls")  # the submission listener
        assert _wait_banner(process, output) == passed
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", default), timeout=5).close()
    finally:
        _stop(process, output)
        assert gone(process.pid)


def _free_ports(count: int) -> list[int]:
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def test_a_group_without_a_user_is_refused() -> None:
    """It would drop the group and keep uid 0 for all the mail work."""
    with pytest.raises(listeners.ListenerError, match="--group needs --user"):
        listeners.resolve_identity(None, "nogroup")


def test_systemd_variables_for_another_process_are_ignored_and_removed() -> None:
    environ = {"LISTEN_PID": "1", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "smtp"}
    assert listeners.from_systemd(environ, pid=2) is None
    assert environ == {}  # nothing we start takes them for its own


def test_systemd_socket_count_must_be_a_number() -> None:
    environ = {"LISTEN_PID": "7", "LISTEN_FDS": "many"}
    with pytest.raises(listeners.ListenerError, match="LISTEN_FDS='many'"):
        listeners.from_systemd(environ, pid=7)


def test_passed_descriptor_that_is_not_a_listening_socket_is_refused() -> None:
    """A connected (not listening) socket at descriptor 3 of a child: refused by name."""
    script = (
        "import os, socket\n"
        "from django_inbound_smtp.smtp import listeners\n"
        "a, b = socket.socketpair()\n"
        "os.dup2(a.fileno(), 3)\n"
        "env = {'LISTEN_PID': str(os.getpid()), 'LISTEN_FDS': '1', 'LISTEN_FDNAMES': 'smtp'}\n"
        "try:\n"
        "    listeners.from_systemd(env)\n"
        "except listeners.ListenerError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert "Passed descriptor 3 (smtp) is not a listening TCP socket" in result.stdout


# The window between the metrics listener's bind and the drop of privileges, widened:
# the child's SMTP listeners bind two seconds late (the loop runs meanwhile). The SMTP
# bind is the loop.create_server call that passes reuse_port.
_SLOW_SMTP_BIND = """
import asyncio as _asyncio
import asyncio.base_events as _base_events
_create_server = _base_events.BaseEventLoop.create_server
async def _slow_create_server(self, *args, **kwargs):
    if "reuse_port" in kwargs:
        await _asyncio.sleep(2)
    return await _create_server(self, *args, **kwargs)
_base_events.BaseEventLoop.create_server = _slow_create_server
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs a root test run")
@pytest.mark.parametrize("probed", [False, True], ids=["plain", "readyz-during-startup"])
def test_no_database_connection_is_opened_as_root(
    tmp_path: Path, certs: Certs, own_folder: Path, probed: bool
) -> None:
    """``--user``: every database connection of smtpd is opened after the drop. One
    opened as root fails where the database authenticates the process's user (a
    PostgreSQL socket with peer authentication, Debian's default) and makes root's
    files beside a SQLite database. The child's settings record the effective uid of
    each connection as it opens (Django's ``connection_created`` signal).

    ``probed``: with ``--metrics``, ``/readyz`` (which queries the database) is asked
    again and again while smtpd starts; it must not answer before the drop."""
    nobody = pwd.getpwnam(NOBODY)
    opened = own_folder / "connections.log"
    env = project_owned_by(
        nobody,
        own_folder,
        settings_folder=tmp_path,
        certfile=certs.certfile,
        keyfile=certs.keyfile,
        extra=(
            "import os as _os\n"
            "from django.db.backends.signals import connection_created as _created\n"
            "def _record(**kwargs):\n"
            f"    with open({str(opened)!r}, 'a') as _log:\n"
            "        _log.write(f'{_os.geteuid()}\\n')\n"
            "_created.connect(_record, weak=False)\n" + (_SLOW_SMTP_BIND if probed else "")
        ),
    )
    opened.write_text("")  # what migrate and the mailbox command opened is not smtpd's
    os.chown(opened, nobody.pw_uid, nobody.pw_gid)
    [metrics_port] = _free_ports(1)
    metrics = ["--metrics", f"127.0.0.1:{metrics_port}"] if probed else []
    process = _spawn([*DJANGO, "smtpd", "127.0.0.1:0", "--user", NOBODY, *metrics], env)
    output: list[str] = []
    started = threading.Event()
    answered: list[int] = []

    def probe() -> None:
        while not started.is_set():
            with contextlib.suppress(OSError):
                answered.append(get(metrics_port, "/readyz")[0])
            time.sleep(0.02)

    prober = threading.Thread(target=probe, daemon=True)
    if probed:
        prober.start()
    try:
        port = _wait_banner(process, output)
        started.set()
        if probed:
            prober.join(30)
            assert get(metrics_port, "/readyz")[0] == 200
        with GuardedSMTP("127.0.0.1", port, timeout=30) as client:
            refused = client.sendmail(
                "a@example.org", ["user@our.test"], b"Subject: x\r\n\r\nx\r\n"
            )
            assert refused == {}
    finally:
        _stop(process, output)
    assert process.returncode == 0, "".join(output)
    uids = opened.read_text().split()
    assert uids, "no connection recorded"
    assert set(uids) == {str(nobody.pw_uid)}, uids

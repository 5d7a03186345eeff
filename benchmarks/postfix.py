"""A private Postfix: for the benchmark (receives durably, puts every message on hold)
and for the LMTP test (relays to ``smtpd --lmtp``, ``tests/test_postfix_lmtp.py``).

Each instance lives in its own temporary folder, apart from any system Postfix:

- ``etc/main.cf`` and ``etc/master.cf`` written here (``postfix -c etc``); the queue and
  data folders are separate (``postfix check`` refuses a queue inside the config folder);
- one ``smtpd`` listener on ``127.0.0.1:PORT`` (loopback only) and the internal services;
- ``mydestination`` is the benchmark domain and ``local_recipient_maps`` is empty, so every
  recipient of ``bench.test`` is accepted, like ours' catch-all mailbox;
- ``smtpd_end_of_data_restrictions = check_client_access static:HOLD``: every message goes
  to the ``hold`` queue and nothing is ever delivered. ``cleanup`` fsyncs the queue file
  before ``smtpd`` answers ``250`` (Postfix always does; there is no setting to turn it
  off), so a ``250`` means the same as ours: the message is on disk;
- the log goes to ``data/maillog`` (``maillog_file``, written by ``postlogd``).

Another ``main.cf`` can be given (``PostfixServer(config=...)``; the LMTP test's relays
a domain to our LMTP listener); ``common_main_cf`` is the part every instance shares.

``postfix -c etc start`` daemonizes ``master``; ``stop()`` runs ``postfix -c etc stop``,
waits for ``master`` to go, and kills what is left. Needs root (Postfix's ``master`` and
the ``postfix`` user), like installing the package.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import proctree

DOMAIN = "bench.test"
MAX_MESSAGE_SIZE = 40 * 1024 * 1024

# Internal services (master.cf(5)); no chroot, so the queue folder needs no copy of /etc.
SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
lmtp      unix  -       -       n       -       -       lmtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class PostfixError(Exception):
    """Postfix could not be set up, started or stopped."""


def postfix_command() -> str:
    found = shutil.which("postfix") or "/usr/sbin/postfix"
    if not os.access(found, os.X_OK):
        raise PostfixError(
            "postfix not found: `make bench` installs it (Debian package postfix, no daemon)"
        )
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def common_main_cf(folder: Path, *, hostname: str) -> str:
    """What every private instance's ``main.cf`` holds: its own folders, loopback only,
    no local delivery, its log in ``data/maillog``."""
    return f"""\
compatibility_level = 3.6
queue_directory = {folder}/queue
data_directory = {folder}/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = {hostname}
myorigin = $myhostname
local_recipient_maps =
alias_maps =
alias_database =
mynetworks = 127.0.0.0/8
relayhost =
smtpd_banner = $myhostname ESMTP
biff = no
maillog_file_prefixes = {folder}
maillog_file = {folder}/data/maillog
"""


def main_cf(folder: Path) -> str:
    """The benchmark's: every recipient of ``DOMAIN`` accepted, every message on hold."""
    return (
        "# Written by benchmarks/postfix.py for one benchmark load; removed afterwards.\n"
        + common_main_cf(folder, hostname="mx.postfix.bench")
        + f"""\
mydomain = postfix.bench
mydestination = {DOMAIN}
smtpd_end_of_data_restrictions = check_client_access static:HOLD
message_size_limit = {MAX_MESSAGE_SIZE}
mailbox_size_limit = 0
"""
    )


class PostfixServer:
    """One private Postfix (same interface as ``run.Server``: start, stop, pid, port)."""

    kind = "postfix"

    def __init__(
        self, folder: Path, *, name: str = "postfix", config: Callable[[Path], str] = main_cf
    ) -> None:
        self.name = name
        self.config = config  # main.cf for this instance's folder
        self.folder = folder
        self.etc = folder / "etc"
        self.queue = folder / "queue"
        self.data = folder / "data"
        self.port = 0
        self.master_pid = 0

    @property
    def pid(self) -> int:
        return self.master_pid

    @property
    def log_path(self) -> Path:
        return self.data / "maillog"

    def _postfix(self, action: str, *, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [postfix_command(), "-c", str(self.etc), action],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def start(self, timeout: float = 60.0) -> None:
        for path in (self.etc, self.queue, self.data):
            path.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.data, user="postfix")  # master.lock, maillog
        self.port = free_port()
        (self.etc / "main.cf").write_text(self.config(self.folder), encoding="ascii")
        (self.etc / "master.cf").write_text(
            f"127.0.0.1:{self.port} inet n - n - - smtpd\n" + SERVICES, encoding="ascii"
        )
        started = self._postfix("start", timeout=timeout)
        if started.returncode != 0:
            raise PostfixError(
                f"postfix -c {self.etc} start failed ({started.returncode}):\n"
                f"{started.stdout}{started.stderr}{self.log_tail()}"
            )
        deadline = time.monotonic() + timeout
        pid_file = self.queue / "pid" / "master.pid"
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                self.master_pid = int(pid_file.read_text(encoding="ascii").split()[0])
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as probe:
                    if probe.recv(512).startswith(b"220"):
                        return
            time.sleep(0.05)
        raise PostfixError(f"postfix did not answer on port {self.port}:\n{self.log_tail()}")

    def _master_alive(self) -> bool:
        if not self.master_pid:
            return False
        try:
            state = Path(f"/proc/{self.master_pid}/stat").read_text(encoding="ascii")
        except OSError:
            return False
        # A zombie is gone (its parent, whoever adopted it, has not reaped it yet).
        return state.rsplit(")", 1)[1].split()[0] != "Z"

    def stop(self) -> int | None:
        """``postfix stop``; after 30 s, ``postfix abort`` and SIGKILL to ``master``."""
        if not self.master_pid and not (self.queue / "pid" / "master.pid").exists():
            return None
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self._postfix("stop", timeout=30)
        deadline = time.monotonic() + 30
        while self._master_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._master_alive():
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self._postfix("abort", timeout=10)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.master_pid, signal.SIGKILL)
            return -signal.SIGKILL
        return 0

    def queued(self) -> dict[str, int]:
        """Queue files per queue: ``hold`` should hold every accepted message, the others
        nothing (``incoming`` briefly holds a message being received)."""
        counts: dict[str, int] = {}
        for name in ("incoming", "active", "deferred", "hold", "maildrop", "corrupt"):
            counts[name] = sum(len(files) for _, _, files in os.walk(self.queue / name))
        return counts

    def postqueue(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """``postqueue -c etc ARGS`` (``-f``: deliver deferred mail now; ``-j``: list)."""
        postqueue = shutil.which("postqueue") or "/usr/sbin/postqueue"
        return subprocess.run(
            [postqueue, "-c", str(self.etc), *args],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def log_problems(self) -> list[str]:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
        return [
            line for line in text.splitlines() if re.search(r"\b(warning|error|fatal|panic):", line)
        ]

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def count_fsyncs(pid: int, *, send: object, timeout: float = 60) -> int:
    """Trace ``fsync``/``fdatasync`` of ``pid`` and everything it forks while ``send()``
    runs (``strace -f``); returns how many were made. Raises PostfixError without strace."""
    strace = shutil.which("strace")
    if not strace:
        raise PostfixError("strace not installed")
    targets = ",".join(str(p) for p in sorted({pid} | proctree.descendants(pid)))
    tracer = subprocess.Popen(
        [strace, "-f", "-qq", "-e", "trace=fsync,fdatasync", "-p", targets],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(1.0)  # strace attaches
        assert callable(send)
        send()
        time.sleep(0.5)
    finally:
        tracer.send_signal(signal.SIGINT)
        _, err = tracer.communicate(timeout=timeout)
    # Calls, not results: with several processes strace splits a call across two lines
    # ("fsync(13 <unfinished ...>" ... "<... fsync resumed>) = 0").
    return len(re.findall(r"\b(?:fsync|fdatasync)\(\d+", err))

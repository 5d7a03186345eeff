"""Run the demo: the inbound SMTP server and the admin side by side (``make run``).

Starts ``manage.py smtpd 127.0.0.1:8025`` and ``manage.py runserver 127.0.0.1:8000``
as child processes with this interpreter, prints how to send a test mail (and a reply
that becomes a comment on ticket #1) once both listen, and stops both on Ctrl-C or
SIGTERM (exit 0). If either child dies, the other is stopped and the script exits
non-zero. Standard library only.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

HERE = Path(__file__).resolve().parent
MANAGE = str(HERE / "manage.py")
HOST = "127.0.0.1"
SMTP_PORT = 8025
WEB_PORT = 8000
# smtpd waits up to INBOUND_SMTP["SHUTDOWN_GRACE"] (30 s by default) for mail in flight.
STOP_TIMEOUT = 45.0
POLL_INTERVAL = 0.2

# Double quotes outside, single quotes inside: bash leaves \r\n alone within double
# quotes and Python's bytes literal turns them into CR LF. No "!" (history expansion).
SEND_COMMAND = (
    'python3 -c "import smtplib; '
    f"smtplib.SMTP('{HOST}', {SMTP_PORT}).sendmail("
    "'you@example.org', ['demo@example.test'], "
    "b'Subject: Hello\\r\\n\\r\\nIt works.\\r\\n')\""
)


# A reply to ticket #1 (demo_setup creates it) at its signed reply address: the comment
# is its new text (message.reply_text), without the "On ... wrote:" line and the quote.
def ticket_command(reply_address: str) -> str:
    return (
        'python3 -c "import smtplib; '
        f"smtplib.SMTP('{HOST}', {SMTP_PORT}).sendmail("
        f"'you@example.org', ['{reply_address}'], "
        "b'Subject: Re: Demo ticket\\r\\n\\r\\nFixed, thanks.\\r\\n\\r\\n"
        "On Mon, 1 Jun 2026 at 10:00, Support <support@example.test> wrote:\\r\\n"
        "> Is it fixed?\\r\\n')\""
    )


BANNER = """
======================================================================
 django-inbound-smtp demo is running

 Admin:  http://{HOST}:{WEB_PORT}/admin/   (login: admin / admin)
 SMTP:   {HOST}:{SMTP_PORT}, accepting mail for demo@example.test
         and signed ticket reply addresses (reply+<token>@example.test)

 Send a test message from another terminal:

   {SEND_COMMAND}

 It shows up under "Inbound messages" in the admin, and the demo
 receiver logs one "inbox: ..." line here.

 Comment on ticket #1 by replying to its signed address
 {REPLY_ADDRESS}:

   {TICKET_COMMAND}

 Why that address reaches the ticket:
   python example_project/manage.py inbound_route {REPLY_ADDRESS}

 The reply's new text (no quote) becomes a comment on the ticket
 (admin: Demo inbox > Tickets > #1). Stop with Ctrl-C.
======================================================================
"""


def _demo_reply_address() -> str:
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="example_project.settings")
    result = subprocess.run(
        [sys.executable, MANAGE, "demo_setup", "--reply-address"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def _say(text: str) -> None:
    print(f"run_demo: {text}", flush=True)


def _start(*args: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="example_project.settings", PYTHONUNBUFFERED="1")
    # A process group of their own: the terminal's Ctrl-C reaches only this script,
    # which forwards one SIGTERM. (Two signals would make smtpd skip its grace period.)
    return subprocess.Popen([sys.executable, MANAGE, *args], cwd=HERE, env=env, process_group=0)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _stop(children: dict[str, subprocess.Popen[bytes]], stop_requests: list[int]) -> None:
    """SIGTERM every running child and wait; another Ctrl-C forwards another SIGTERM."""
    forwarded = 0
    deadline = time.monotonic() + STOP_TIMEOUT
    while True:
        running = [child for child in children.values() if child.poll() is None]
        if not running:
            return
        wanted = max(1, len(stop_requests))
        if forwarded < wanted:
            for child in running:
                child.send_signal(signal.SIGTERM)
            forwarded = wanted
        if time.monotonic() > deadline:
            for name, child in children.items():
                if child.poll() is None:
                    _say(f"{name} did not stop within {STOP_TIMEOUT:.0f} s; killing it")
                    child.kill()
                    child.wait()
            return
        time.sleep(POLL_INTERVAL)


def main() -> int:
    stop_requests: list[int] = []

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_requests.append(signum)

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    reply_address = _demo_reply_address()
    banner = BANNER.format(
        HOST=HOST,
        WEB_PORT=WEB_PORT,
        SMTP_PORT=SMTP_PORT,
        SEND_COMMAND=SEND_COMMAND,
        REPLY_ADDRESS=reply_address,
        TICKET_COMMAND=ticket_command(reply_address),
    )
    children = {
        "smtpd": _start("smtpd", f"{HOST}:{SMTP_PORT}"),
        "runserver": _start("runserver", f"{HOST}:{WEB_PORT}", "--noreload"),
    }
    announced = False
    failed: tuple[str, int] | None = None
    while not stop_requests:
        for name, child in children.items():
            code = child.poll()
            if code is not None:
                failed = (name, code)
                break
        if failed:
            break
        if not announced and _listening(SMTP_PORT) and _listening(WEB_PORT):
            print(banner, flush=True)
            announced = True
        time.sleep(POLL_INTERVAL)

    if failed:
        name, code = failed
        _say(f"{name} exited with code {code}; stopping the other server")
    else:
        _say("stopping both servers")
    _stop(children, stop_requests)
    if failed:
        return failed[1] if failed[1] > 0 else 1
    _say("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

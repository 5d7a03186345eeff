"""Listening sockets made before serving: bound as root, or handed over by systemd.

Two ways a production ``smtpd`` gets port 25 without running mail code as root:

- **Bind, then drop.** Started as root with ``--user``/``--group``, ``smtpd`` binds
  every listener first (not yet accepting), loads the TLS key, then
  :func:`drop_privileges` for good (supplementary groups, gid, uid) before it opens a
  database connection or reads a byte of mail.
- **Socket activation.** systemd (or ``systemd-socket-activate``) binds the port and
  passes the listening sockets as file descriptors 3, 4, … (``LISTEN_FDS``,
  ``LISTEN_PID``, ``LISTEN_FDNAMES``; sd_listen_fds(3)). :func:`from_systemd` takes them;
  the names say which listener each one is: ``smtp`` (the default for an unnamed
  socket), ``smtps`` (implicit TLS) or ``submission``.

Pure: no Django.
"""

from __future__ import annotations

import grp
import os
import pwd
import socket
from collections.abc import MutableMapping
from dataclasses import dataclass, field

__all__ = [
    "LISTENER_NAMES",
    "Listeners",
    "ListenerError",
    "drop_privileges",
    "from_systemd",
    "resolve_identity",
]

# sd_listen_fds(3): the first passed descriptor.
SD_LISTEN_FDS_START = 3
LISTENER_NAMES = ("smtp", "smtps", "submission")
# Names systemd gives a socket without FileDescriptorName= (a unit's name, "unknown"
# from systemd-socket-activate without --fdname): the plain SMTP listener.
_DEFAULT_NAME = "smtp"


class ListenerError(Exception):
    """A listener cannot be made or taken over, or privileges cannot be dropped; the
    message says why, for the operator."""


@dataclass
class Listeners:
    """Listening sockets by role; an empty list means "bind it yourself" (or none).

    ``activated``: systemd passed them. Then the passed sockets are all there is to
    serve: a role without one is not bound here (systemd owns the ports; an address
    bound on top would be one the unit does not list, and below 1024 would fail)."""

    smtp: list[socket.socket] = field(default_factory=list)
    smtps: list[socket.socket] = field(default_factory=list)
    submission: list[socket.socket] = field(default_factory=list)
    activated: bool = False

    def close(self) -> None:
        for sock in self.smtp + self.smtps + self.submission:
            sock.close()


def from_systemd(
    environ: MutableMapping[str, str] | None = None, *, pid: int | None = None
) -> Listeners | None:
    """The sockets systemd passed to this process, by name; ``None`` when there are
    none (or they were meant for another process: ``LISTEN_PID``). The variables are
    removed, so processes we start do not take the descriptors for theirs."""
    env: MutableMapping[str, str] = os.environ if environ is None else environ
    if "LISTEN_FDS" not in env:
        return None
    wanted_pid = env.get("LISTEN_PID", "")
    count_text = env.get("LISTEN_FDS", "")
    names_text = env.get("LISTEN_FDNAMES", "")
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(name, None)
    if not wanted_pid.isdigit() or int(wanted_pid) != (os.getpid() if pid is None else pid):
        return None
    if not count_text.isdigit() or int(count_text) < 1:
        raise ListenerError(f"LISTEN_FDS={count_text!r} is not a positive number of sockets.")
    count = int(count_text)
    names = names_text.split(":") if names_text else []
    listeners = Listeners(activated=True)
    for offset in range(count):
        fd = SD_LISTEN_FDS_START + offset
        name = names[offset] if offset < len(names) else _DEFAULT_NAME
        role = name if name in LISTENER_NAMES else _DEFAULT_NAME
        getattr(listeners, role).append(_adopt(fd, name))
    return listeners


def _adopt(fd: int, name: str) -> socket.socket:
    try:
        sock = socket.socket(fileno=fd)
    except OSError as error:
        raise ListenerError(f"Passed descriptor {fd} ({name}) is not a socket: {error}.") from error
    if sock.type != socket.SOCK_STREAM or not sock.getsockopt(
        socket.SOL_SOCKET, socket.SO_ACCEPTCONN
    ):
        sock.detach()
        raise ListenerError(
            f"Passed descriptor {fd} ({name}) is not a listening TCP socket: use "
            "ListenStream= with Accept=no in the socket unit."
        )
    sock.settimeout(0)  # non-blocking, as asyncio wants it
    return sock


def resolve_identity(user: str | None, group: str | None) -> tuple[int, int]:
    """``(uid, gid)`` to become, checked before anything starts: only root can switch,
    and both names must exist. The group defaults to the user's primary group. A group
    alone is refused: it would leave every piece of mail work running as root."""
    if user is None and group is not None:
        raise ListenerError("--group needs --user: a group alone would keep smtpd root.")
    if os.geteuid() != 0:
        raise ListenerError(
            "--user/--group need smtpd to start as root (it binds, then drops privileges)."
        )
    try:
        entry = pwd.getpwnam(user) if user is not None else None
    except KeyError as error:
        raise ListenerError(f"No such user: {user!r}.") from error
    try:
        gid = grp.getgrnam(group).gr_gid if group is not None else None
    except KeyError as error:
        raise ListenerError(f"No such group: {group!r}.") from error
    if gid is None:
        gid = entry.pw_gid if entry is not None else os.getgid()
    return (entry.pw_uid if entry is not None else os.getuid()), gid


def drop_privileges(user: str | None, group: str | None) -> tuple[int, int]:
    """Become ``user`` (and ``group``) for good: supplementary groups, then gid, then
    uid. Returns ``(uid, gid)``. A regained root afterwards would be a failure, so it is
    checked."""
    if user is None and group is None:
        return os.getuid(), os.getgid()
    uid, gid = resolve_identity(user, group)
    os.setgroups([gid])
    os.setgid(gid)
    if user is not None:
        os.setuid(uid)
        if uid != 0 and _can_regain_root():
            raise ListenerError(f"Dropped to {user!r} but could become root again.")
    return uid, gid


def _can_regain_root() -> bool:
    try:
        os.setuid(0)
    except PermissionError:
        return False
    return True

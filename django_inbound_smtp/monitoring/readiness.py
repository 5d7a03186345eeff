"""The blocking halves of ``/readyz``: can this process store mail right now?

Each check returns ``(ok, detail)`` and never raises; ``detail`` is for an operator
(paths, sizes, the database error's first line), never shown to SMTP clients. They run
in the monitoring service's own threads, with a timeout, never on the event loop.
"""

from __future__ import annotations

import os
import tempfile

from django.db import connections, router

from django_inbound_smtp._db import unit_of_work
from django_inbound_smtp.conf import get_settings
from django_inbound_smtp.models import InboundMessage
from django_inbound_smtp.store import files

__all__ = ["Result", "database", "disk_space", "storage"]

Result = tuple[bool, str]


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".strip()


def database() -> Result:
    """The database holding the messages answers a query on the message table."""
    try:
        with unit_of_work():
            alias = router.db_for_read(InboundMessage)
            InboundMessage.objects.using(alias).order_by().values_list("pk").exists()
            return True, f"{connections[alias].vendor} ({alias}) answers"
    except Exception as error:
        return False, _first_line(error)


def storage() -> Result:
    """A file can be created, written and removed in every folder messages land in (the
    spool, and the storage when it is a local folder). Remote storage is not probed
    (each probe would be a billed write)."""
    try:
        folders = files.message_folders()
    except Exception as error:
        return False, _first_line(error)
    for folder in folders:
        try:
            # A folder not made yet is probed where the server will make it. Never made
            # here: this process may be the root parent of ``--workers --user``, and a
            # folder of root's would refuse every message the workers store.
            handle, path = tempfile.mkstemp(prefix=".readyz-", dir=_existing(folder))
            try:
                os.write(handle, b"ok")
            finally:
                os.close(handle)
                os.unlink(path)
        except OSError as error:
            return False, f"{folder} is not writable: {_first_line(error)}"
    return True, f"writable: {', '.join(folders)}"


def _existing(folder: str) -> str:
    """``folder``, or its nearest ancestor that exists (a file in its place stays: it
    is the fault to report)."""
    while not os.path.lexists(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    return folder


def disk_space() -> Result:
    """Free space in every message folder is at least ``READY_MIN_FREE_SPACE``."""
    settings = get_settings()
    threshold = settings.READY_MIN_FREE_SPACE
    try:
        folders = files.message_folders()
        free = {folder: _free_bytes(folder) for folder in folders}
    except Exception as error:
        return False, _first_line(error)
    low = {folder: space for folder, space in free.items() if space < threshold}
    shown = ", ".join(f"{folder}: {space} bytes free" for folder, space in (low or free).items())
    if low:
        return False, f"below {threshold} bytes: {shown}"
    return True, shown


def _free_bytes(folder: str) -> int:
    # A folder not created yet is on its nearest existing parent's file system.
    stats = os.statvfs(_existing(folder))
    return stats.f_bavail * stats.f_frsize

"""Durable files in the configured storage: raw messages and attachments, and where
they go (file names, the spool folder).

Django's ``FileSystemStorage`` writes without fsync, so a power cut after our ``250``
could lose a file it reported saved. Here every write to a local storage is followed
by an fsync of the file and of its folder (and, once per process, of each new folder
up to the storage root). A remote storage (S3 through django-storages, say) has no
local path; its acknowledged write is the durability point.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from django.core.files.base import ContentFile, File
from django.core.files.storage import FileSystemStorage, Storage, storages

from django_inbound_smtp.conf import get_settings
from django_inbound_smtp.envelope import ReceivedEnvelope
from django_inbound_smtp.spool import Spool

__all__ = [
    "discard",
    "inbound_storage",
    "local_path",
    "make_durable_many",
    "message_folders",
    "place",
    "place_raw",
    "raw_file_name",
    "save_durably",
    "spool_directory",
]

logger = logging.getLogger(__name__)

# Bytes per read when a spool file must be copied rather than linked.
_COPY_CHUNK = 1024 * 1024
# Folders whose own entry in their parent is known to be on disk (fsynced once).
_durable_folders: set[str] = set()
# fsync mostly waits for the disk, not the CPU: a group of files is fsynced in parallel,
# so the file system can flush them in one journal commit instead of one after another.
_FSYNC_THREADS = 8
_fsync_pool: ThreadPoolExecutor | None = None


def inbound_storage() -> Storage:
    """The storage named by ``INBOUND_SMTP["STORAGE"]``."""
    return storages[get_settings().STORAGE]


def local_path(storage: Storage, name: str) -> str | None:
    """The file-system path of ``name`` in ``storage``, or ``None`` for remote storage.

    Only a ``FileSystemStorage`` (or subclass) counts as local: other storages may
    answer ``path()`` without keeping their files there (``InMemoryStorage`` does)."""
    if not isinstance(storage, FileSystemStorage):
        return None
    return storage.path(name)


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_durable(storage: Storage, name: str) -> None:
    """fsync ``name``, its folder and any new folder up to the storage root."""
    path = local_path(storage, name)
    if path is None:
        return  # remote storage: its acknowledged write is the durability point
    _fsync_path(path)
    _fsync_folder(storage, os.path.dirname(path))


def _fsync_folder(storage: Storage, folder: str) -> None:
    root = os.path.realpath(storage.path(""))
    _fsync_path(folder)
    while folder not in _durable_folders and os.path.realpath(folder) != root:
        parent = os.path.dirname(folder)
        _fsync_path(parent)
        _durable_folders.add(folder)
        folder = parent


def make_durable_many(storage: Storage, names: Sequence[str]) -> dict[str, BaseException]:
    """fsync every file of ``names`` (in parallel threads), then each of their folders once.

    Returns the names that could not be made durable, with the error; those files are
    discarded (a folder that fails its fsync fails every file in it). The others are
    durable when this returns."""
    paths = {name: local_path(storage, name) for name in names}
    if not names or None in paths.values():
        return {}  # remote storage: its acknowledged write is the durability point
    failed: dict[str, BaseException] = {}
    outcomes = _pool().map(_fsync_outcome, [paths[name] for name in names])
    for name, error in zip(names, outcomes, strict=True):
        if error is not None:
            failed[name] = error
    folders: dict[str, list[str]] = {}
    for name in names:
        if name not in failed:
            folders.setdefault(os.path.dirname(str(paths[name])), []).append(name)
    for folder, members in folders.items():
        try:
            _fsync_folder(storage, folder)
        except OSError as error:
            failed.update(dict.fromkeys(members, error))
    for name in failed:
        discard(name, storage=storage)
    return failed


def _fsync_outcome(path: str | None) -> OSError | None:
    try:
        _fsync_path(str(path))
    except OSError as error:
        return error
    return None


def _pool() -> ThreadPoolExecutor:
    global _fsync_pool  # created on first use, never at import
    if _fsync_pool is None:
        _fsync_pool = ThreadPoolExecutor(_FSYNC_THREADS, thread_name_prefix="inbound-fsync")
    return _fsync_pool


def save_durably(
    name: str,
    *,
    content: bytes | None = None,
    source_path: str | None = None,
    storage: Storage | None = None,
) -> str:
    """:func:`place` ``content`` (or the file at ``source_path``), then make it durable;
    return the name used. On failure nothing is left behind."""
    storage = storage or inbound_storage()
    name = place(name, storage=storage, content=content, source_path=source_path)
    _durable_or_discarded(storage, name)
    return name


def place(
    name: str,
    *,
    storage: Storage,
    content: bytes | None = None,
    source_path: str | None = None,
) -> str:
    """Put ``content`` (or the file at ``source_path``) into storage as ``name`` or a free
    variant of it, **without** fsync; return the name used.

    For callers that make many files durable at once (:func:`make_durable_many`). A
    remote storage's write is durable already. On failure nothing is left behind."""
    if source_path is not None:
        return _link_or_copy(name, source_path, storage=storage)
    assert content is not None
    if isinstance(storage, FileSystemStorage):
        return _create_local(storage, name, _write_bytes(content))
    return storage.save(name, ContentFile(content))


def _create_local(storage: FileSystemStorage, name: str, fill: Callable[[int], None]) -> str:
    # Our own write rather than FileSystemStorage.save, which leaves a partial file
    # behind when a write fails (ENOSPC): created exclusively, removed on any error.
    path = storage.path(name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        return _create_local(storage, storage.get_available_name(name), fill)
    try:
        fill(fd)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)
    if storage.file_permissions_mode is not None:
        os.chmod(path, storage.file_permissions_mode)
    return name


def _write_bytes(content: bytes) -> Callable[[int], None]:
    def fill(fd: int) -> None:
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view) :]

    return fill


def _copy_file(source_path: str) -> Callable[[int], None]:
    def fill(fd: int) -> None:
        with open(source_path, "rb") as source:
            while chunk := source.read(_COPY_CHUNK):
                _write_bytes(chunk)(fd)

    return fill


def _link_or_copy(name: str, source_path: str, *, storage: Storage) -> str:
    # On a local storage on the same file system a hard link: no byte is copied,
    # however large the message. Otherwise the file is streamed into storage.
    if isinstance(storage, FileSystemStorage):
        target = storage.path(name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        try:
            os.link(source_path, target)
        except FileExistsError:
            name = storage.get_available_name(name)
            return _link_or_copy(name, source_path, storage=storage)
        except OSError:
            # Another file system, or no hard links there: copy.
            return _create_local(storage, name, _copy_file(source_path))
        try:
            if storage.file_permissions_mode is not None:
                os.chmod(target, storage.file_permissions_mode)
        except BaseException:
            os.unlink(target)
            raise
        return name
    with open(source_path, "rb") as handle:
        return storage.save(name, File(handle, name=os.path.basename(name)))


def _durable_or_discarded(storage: Storage, name: str) -> None:
    try:
        make_durable(storage, name)
    except BaseException:
        discard(name, storage=storage)
        raise


def discard(name: str, *, storage: Storage | None = None) -> None:
    """Delete ``name`` from storage, logging (not raising) a failure."""
    storage = storage or inbound_storage()
    try:
        storage.delete(name)
    except Exception:
        # Harmless: no row points at it. Logged; the orphan sweeper retries.
        logger.exception("could not delete orphaned file %s", name)


def raw_file_name(envelope: ReceivedEnvelope) -> str:
    """Storage name of the raw message: ``<prefix>/YYYY/MM/DD/<queue id>.eml``.

    Built from our own queue id only, never from anything the client sent.
    """
    day = envelope.received_at.strftime("%Y/%m/%d")
    prefix = get_settings().STORAGE_PREFIX
    return f"{prefix}/{day}/{envelope.queue_id}.eml" if prefix else f"{day}/{envelope.queue_id}.eml"


def spool_directory() -> str:
    """Where messages larger than ``SPOOL_MEMORY_LIMIT`` are written while they arrive.

    ``SPOOL_DIR`` if set; else a ``spool`` folder beside the raw messages in a local
    storage (the same file system, so storing a spooled message is a hard link, not a
    copy); else, for remote storage, one in the system's temporary folder."""
    settings = get_settings()
    if settings.SPOOL_DIR:
        return str(settings.SPOOL_DIR)
    root = local_path(inbound_storage(), settings.STORAGE_PREFIX or "")
    if root is None:
        return os.path.join(tempfile.gettempdir(), "django-inbound-smtp-spool")
    return os.path.join(root, "spool")


def message_folders() -> list[str]:
    """The spool folder, then the local storage folder (if the storage is local)."""
    settings = get_settings()
    root = local_path(inbound_storage(), settings.STORAGE_PREFIX or "")
    return [spool_directory()] + ([root] if root is not None else [])


def place_raw(envelope: ReceivedEnvelope, spool: Spool, *, storage: Storage) -> str:
    """Put the raw message into ``storage`` without fsync; return the name used.

    A spooled message is linked in from its file; a small one is written from memory."""
    name = raw_file_name(envelope)
    if spool.path is None:
        return place(name, storage=storage, content=spool.memory())
    return place(name, storage=storage, source_path=spool.path)

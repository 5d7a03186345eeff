"""The message being received: a bounded memory buffer that spills to a spool file.

Pure (stdlib only). The SMTP layer feeds decoded DATA bytes with :meth:`Spool.add`,
which only copies into memory and never blocks; once the buffer passes
``memory_limit`` it asks for a :meth:`Spool.flush`, which the caller runs in a worker
thread (hashing and file writes never run on the event loop). So a message holds at
most ``memory_limit`` bytes of buffer plus ``head_limit`` bytes of header in memory,
whatever its size, and the delivery step finds either the whole message in memory
(small mail, the common case: no spool file at all) or in a spool file made durable
by :meth:`Spool.finish`, which it links into storage without copying.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
import threading

__all__ = ["SPOOL_SUFFIX", "Spool", "is_disk_full"]

# Spool files end in this so the orphan sweeper never mistakes anything else for one.
SPOOL_SUFFIX = ".spool"


class Spool:
    """One message's bytes: ``prefix`` (our trace header, not hashed or counted) then
    the client's content.

    ``size`` and ``digest`` (SHA-256 hex) cover the content only; ``head`` keeps its
    first ``head_limit`` bytes (the header block, for the summary taken before ``250``).
    The DATA reader calls it from one task, running :meth:`flush`, :meth:`finish` and
    :meth:`rewrite` in worker threads and waiting for them even when cancelled. A lock
    makes that a guarantee: :meth:`discard` waits for a step in progress, so it never
    closes or deletes a file a thread is still writing.
    """

    def __init__(
        self,
        directory: str | None,
        *,
        memory_limit: int,
        head_limit: int,
        prefix: bytes = b"",
    ) -> None:
        self.directory = directory
        self.memory_limit = memory_limit
        self.head_limit = head_limit
        self.prefix = prefix
        self.size = 0
        self.path: str | None = None
        #: Set when a delivery owns the spool: it discards it once done, not the session.
        self.taken = False
        self._head = bytearray()
        self._buffer = bytearray()
        self._unhashed = 0  # bytes at the end of the buffer not yet hashed
        self._hash = hashlib.sha256()
        self._digest: str | None = None
        self._fd: int | None = None
        self._lock = threading.Lock()

    # -- on the event loop: memory only --------------------------------------------

    def add(self, data: bytes) -> bool:
        """Append ``data`` in memory; ``True`` when :meth:`flush` should run now."""
        if len(self._head) < self.head_limit:
            self._head += data[: self.head_limit - len(self._head)]
        self._buffer += data
        self._unhashed += len(data)
        self.size += len(data)
        return len(self._buffer) >= self.memory_limit

    @property
    def head(self) -> bytes:
        """The first ``head_limit`` bytes of the content."""
        return bytes(self._head)

    @property
    def on_disk(self) -> bool:
        """Whether the message has spilled to a spool file."""
        return self.path is not None

    # -- in a worker thread: hashing and file I/O ----------------------------------

    def flush(self) -> None:
        """Hash the buffer and move it to the spool file (created on first use).

        Raises ``OSError`` (``ENOSPC`` included) from the file system; the caller then
        discards the spool."""
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        self._hash_buffer()
        if self._fd is None:
            if self.directory is None:
                raise RuntimeError("this spool has no directory to spill to")
            os.makedirs(self.directory, exist_ok=True)
            self._fd, self.path = tempfile.mkstemp(suffix=SPOOL_SUFFIX, dir=self.directory)
            self._write_all(self.prefix)
        self._write_all(self._buffer)
        self._buffer.clear()

    def finish(self) -> None:
        """Complete the digest and, if spilled, write the rest and fsync the spool file."""
        with self._lock:
            self._finish()

    def _finish(self) -> None:
        if self._fd is not None:
            self._flush()
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
        else:
            self._hash_buffer()
        self._digest = self._hash.hexdigest()

    def needs_thread(self) -> bool:
        """Whether :meth:`finish` does file I/O or hashes enough to leave the loop for."""
        return self._fd is not None or self._unhashed > 64 * 1024

    @property
    def digest(self) -> str:
        """SHA-256 (hex) of the content; available after :meth:`finish`."""
        if self._digest is None:
            raise RuntimeError("Spool.digest read before finish()")
        return self._digest

    def memory(self) -> bytes:
        """``prefix + content`` of a spool that never spilled."""
        if self.path is not None:
            raise RuntimeError("the message is in a spool file; read it from there")
        return self.prefix + bytes(self._buffer)

    def content(self) -> bytes:
        """The client's content (without the prefix), read whole; after :meth:`finish`.

        Blocking for a spool file: call it from a worker thread."""
        if self.path is None:
            return bytes(self._buffer)
        with open(self.path, "rb") as handle:
            handle.seek(len(self.prefix))
            return handle.read()

    def rewrite(self, *, prefix: bytes, head_length: int, head: bytes) -> None:
        """Replace the prefix, and the first ``head_length`` content bytes by ``head``.

        For header fields that can only be written after the end of data (our
        Authentication-Results, a forged one renamed). ``size`` and ``head`` follow;
        ``digest`` stays that of the content as received. A spool file is copied once
        into a new fsynced one: blocking, call it from a worker thread."""
        with self._lock:
            self._rewrite(prefix, head_length, head)

    def _rewrite(self, prefix: bytes, head_length: int, head: bytes) -> None:
        if self.path is None:
            self._buffer[:head_length] = head
        else:
            self._copy_with(prefix, head_length, head)
        self.prefix = prefix
        self.size += len(head) - head_length
        self._head[:head_length] = head
        del self._head[self.head_limit :]

    def _copy_with(self, prefix: bytes, head_length: int, head: bytes) -> None:
        assert self.path is not None
        assert self.directory is not None
        fd, new_path = tempfile.mkstemp(suffix=SPOOL_SUFFIX, dir=self.directory)
        try:
            _write_fd(fd, prefix + head)
            with open(self.path, "rb") as source:
                source.seek(len(self.prefix) + head_length)
                while chunk := source.read(1024 * 1024):
                    _write_fd(fd, chunk)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(new_path)
            raise
        os.close(fd)
        os.unlink(self.path)
        self.path = new_path

    def discard(self) -> None:
        """Drop the buffer and delete the spool file, if any. Idempotent; never raises.

        Waits for a :meth:`flush`, :meth:`finish` or :meth:`rewrite` in progress."""
        with self._lock:
            self._discard()

    def _discard(self) -> None:
        self._buffer = bytearray()
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None
        if self.path is not None:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            except OSError:
                pass  # left for the orphan sweeper, which removes old spool files

    def _hash_buffer(self) -> None:
        if self._unhashed:
            view = memoryview(self._buffer)
            self._hash.update(view[len(self._buffer) - self._unhashed :])
            view.release()
            self._unhashed = 0

    def _write_all(self, data: bytes | bytearray) -> None:
        assert self._fd is not None
        _write_fd(self._fd, data)


def _write_fd(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    finally:
        view.release()


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` says the disk (or the quota) is full: ``452 4.3.1``, not ``451``."""
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)

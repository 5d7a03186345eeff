"""Tier 1: the DATA intake into a spool: any chunking and any spill point give the same
stored bytes, digest and end of data; limits and disk faults give the right reply.

No database and no socket: the intake and the spool are driven directly, with a real
temporary folder (and, for ENOSPC, /dev/full: the kernel's own "disk full").
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from django_inbound_smtp.smtp._intake import Intake
from django_inbound_smtp.spool import Spool

PREFIX = b"Received: by test\r\n"


def _stuff(message: bytes) -> bytes:
    lines = message.split(b"\r\n")
    return b"\r\n".join(b"." + line if line.startswith(b".") else line for line in lines)


def _run(wire: bytes, cuts: list[int], folder: Path, *, memory_limit: int, **limits):
    spool = Spool(str(folder), memory_limit=memory_limit, head_limit=64, prefix=PREFIX)
    intake = Intake(
        spool,
        size_limit=limits.get("size_limit"),
        bare_newlines=limits.get("bare_newlines", "keep"),
        line_limit=limits.get("line_limit"),
    )

    async def feed() -> str | None:
        start = 0
        for cut in [*sorted(set(cuts)), len(wire)]:
            if intake.done:
                break
            if cut > start:
                await intake.feed(wire[start:cut])
                start = cut
        assert intake.done
        return await intake.finish(reference="REF")

    reply = asyncio.run(feed())
    return spool, intake, reply


def _stored(spool: Spool) -> bytes:
    if spool.path is None:
        return spool.memory()
    return Path(spool.path).read_bytes()


lines = st.lists(
    st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    max_size=40,
)


@settings(max_examples=200, derandomize=True, database=None, deadline=None)
@given(
    body_lines=lines,
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=12),
    memory_limit=st.integers(1, 300),
)
def test_any_chunking_and_spill_point_store_the_same_bytes(body_lines, cuts, memory_limit):
    message = b"".join(line + b"\r\n" for line in body_lines)
    wire = _stuff(message) + b".\r\nQUIT\r\n"
    with tempfile.TemporaryDirectory() as folder:
        spool, intake, reply = _run(wire, cuts, Path(folder), memory_limit=memory_limit)
        try:
            assert reply is None
            assert _stored(spool) == PREFIX + message
            assert spool.size == len(message)
            assert spool.digest == hashlib.sha256(message).hexdigest()
            assert spool.head == message[:64]
            # Whatever of the next command came in the last chunk is handed back.
            assert b"QUIT\r\n".startswith(intake.trailing)
            assert spool.on_disk == (len(message) >= memory_limit)
        finally:
            spool.discard()
        assert os.listdir(folder) == []


def test_too_big_is_refused_and_leaves_no_spool_file(tmp_path) -> None:
    wire = b"x" * 1500 + b"\r\n.\r\n"  # over the limit, under the drain cap (2x)
    spool, _, reply = _run(wire, [100, 1200], tmp_path, memory_limit=512, size_limit=1000)
    assert reply is not None
    assert reply.startswith("552 5.3.4")
    assert os.listdir(tmp_path) == []
    assert spool.path is None or not os.path.exists(spool.path)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_is_452_after_the_end_of_data(tmp_path) -> None:
    wire = b"y" * 3000 + b"\r\n.\r\n"
    spool = Spool(str(tmp_path), memory_limit=512, head_limit=64, prefix=PREFIX)
    # Spill into /dev/full: every write fails with ENOSPC, as on a full file system.
    spool._fd = os.open("/dev/full", os.O_WRONLY)
    intake = Intake(spool, size_limit=None, bare_newlines="keep", line_limit=None)

    async def feed() -> str | None:
        await intake.feed(wire[:1000])
        await intake.feed(wire[1000:])
        return await intake.finish(reference="REF")

    reply = asyncio.run(feed())
    assert reply is not None
    assert reply.startswith("452 4.3.1")
    assert "REF" in reply
    assert intake.done  # the rest of the data was read, so the reply is in step

"""Tier 2: the orphan sweeper removes files no row points at, and only old ones."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import override_settings

from django_inbound_smtp.models import Attachment, InboundMessage, Mailbox
from django_inbound_smtp.store import files, orphans
from django_inbound_smtp.testing import deliver
from tests.helpers import local_storages

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def media(tmp_path: Path):
    storages = local_storages(tmp_path)
    with override_settings(STORAGES=storages, INBOUND_SMTP={"HOSTNAME": "mx.test"}):
        yield tmp_path


def _age(path: Path, seconds: float = 2 * 3600) -> Path:
    past = time.time() - seconds
    os.utime(path, (past, past))
    return path


def _stored_message() -> InboundMessage:
    Mailbox.objects.get_or_create(address="user@our.test")
    return deliver(b"Subject: kept\r\n\r\nbody\r\n", to=["user@our.test"], process=False)


def test_old_orphans_go_and_everything_else_stays(media: Path) -> None:
    kept = _stored_message()
    _age(media / kept.raw_file)
    attachment = Attachment.objects.create(
        message=kept,
        position=0,
        filename="a.txt",
        file=kept.raw_file.replace(".eml", ".att"),
        content_type="text/plain",
        size=1,
        sha256="0" * 64,
    )
    _age(_write(media / attachment.file))
    day_folder = (media / kept.raw_file).parent
    old_raw = _age(_write(day_folder / "CRASHED.eml"))
    young_raw = _write(day_folder / "INFLIGHT.eml")
    spool = Path(files.spool_directory())
    old_spool = _age(_write(spool / "tmpold.spool"))
    young_spool = _write(spool / "tmpyoung.spool")
    not_ours = _age(_write(spool / "README"))

    removed = orphans.remove_orphans(force=True)

    assert sorted(removed) == sorted(
        [str(old_spool), f"{kept.raw_file.rsplit('/', 1)[0]}/CRASHED.eml"]
    )
    assert not old_raw.exists()
    assert not old_spool.exists()
    for path in (media / kept.raw_file, media / attachment.file, young_raw, young_spool, not_ours):
        assert path.exists(), path


def test_the_command_lists_then_removes(media: Path) -> None:
    kept = _stored_message()
    orphan = _age(_write((media / kept.raw_file).parent / "CRASHED.eml"))
    out = io.StringIO()
    call_command("inbound_cleanup", "--dry-run", stdout=out)
    assert "Would remove 1 orphaned file(s)." in out.getvalue()
    assert orphan.exists()
    out = io.StringIO()
    call_command("inbound_cleanup", stdout=out)
    assert "Removed 1 orphaned file(s)." in out.getvalue()
    assert not orphan.exists()
    assert (media / kept.raw_file).exists()


def test_the_server_sweep_runs_at_most_every_ten_minutes(media: Path) -> None:
    kept = _stored_message()
    folder = (media / kept.raw_file).parent
    orphans.remove_orphans(force=True)
    first = _age(_write(folder / "ONE.eml"))
    assert orphans.remove_orphans() == []  # ran just now: skipped
    assert first.exists()
    assert orphans.remove_orphans(force=True)
    assert not first.exists()


def _write(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_the_listener_s_own_sweeper_removes_orphans(media: Path, monkeypatch) -> None:
    # smtpd sweeps by itself (SWEEP_INTERVAL); orphans are looked for at most every ten
    # minutes per process, counted from the last look: make the last look long ago.
    import math

    from django.test import override_settings

    from django_inbound_smtp.testing import running_server

    monkeypatch.setattr(orphans, "_last_run", -math.inf)
    spool = Path(files.spool_directory())
    old_spool = _age(_write(spool / "crashed.spool"))
    with override_settings(INBOUND_SMTP={"HOSTNAME": "mx.test", "SWEEP_INTERVAL": 0.2}):
        with running_server():
            deadline = time.monotonic() + 10
            while old_spool.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
    assert not old_spool.exists()

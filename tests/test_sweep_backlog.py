"""Review: the dead-local takeover, with a real live queue beside it."""

from __future__ import annotations

import pytest

from django_inbound_smtp import store
from django_inbound_smtp.lifecycle import owners, schedule
from tests.helpers import received_envelope

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_a_long_live_queue_does_not_hide_a_dead_process_messages() -> None:
    # This process (alive) holds more waiting messages than one sweep looks at; a dead
    # process of this host holds one more, with a higher pk.
    live = owners.process_owner()
    for i in range(schedule.SWEEP_BATCH + 1):
        body = b"Subject: %d\r\n\r\nx\r\n" % i
        store.store_message(received_envelope(f"QLIVE{i}"), body, queued_by=live)
    dead = f"{owners.local_prefix()}999999999:1"  # no such pid on this host
    assert owners.is_dead_local(owners.process_of(dead) or "")
    pk = store.store_message(received_envelope("QDEAD"), b"Subject: d\r\n\r\nx\r\n", queued_by=dead)
    with schedule.recording() as recorder:
        schedule.sweep()
    assert recorder.scheduled == [pk]

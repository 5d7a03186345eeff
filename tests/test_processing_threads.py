"""Review: a processing thread that cannot start (address space exhausted, for real,
in a subprocess) must not stop the inline queue for the life of the process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import resource, threading, time
from django_inbound_smtp.lifecycle.backends import _Workers
done = []
workers = _Workers(threads=1, batch=32, handle=done.extend)
soft, hard = resource.getrlimit(resource.RLIMIT_AS)
threading.stack_size(256 * 1024 * 1024)
resource.setrlimit(resource.RLIMIT_AS, (200 * 1024 * 1024, hard))
try:
    workers.put([1])
except RuntimeError:
    pass
resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
threading.stack_size(0)
workers.put([2])
print(sorted(done) if workers.drain(5) else "stuck")
"""


def test_a_thread_that_could_not_start_does_not_stop_the_queue() -> None:
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "[1, 2]", result.stderr[-2000:]

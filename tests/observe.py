"""Helpers of the observability tests: scrape ``/metrics`` and ask the health endpoints
over real HTTP, parsed with prometheus-client's own parser."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.smtpd_process import Smtpd

METRICS_LINE = re.compile(r"^Metrics and health on http://127\.0\.0\.1:(\d+)/ ")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def metrics_port(server: Smtpd) -> int:
    """The HTTP port the banner of ``server`` names."""
    found = server.wait_for(METRICS_LINE, timeout=10)
    assert found, server.text()
    return int(found[1])


def get(port: int, path: str) -> tuple[int, str, bytes]:
    """``GET path`` over HTTP: (status, content type, body), 4xx/5xx included."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=15) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers["Content-Type"], error.read()


def get_json(port: int, path: str) -> tuple[int, dict[str, Any]]:
    status, kind, body = get(port, path)
    assert kind == "application/json", (status, kind, body)
    return status, json.loads(body)


def scrape(port: int) -> Samples:
    """Every sample of ``/metrics``: ``{(name, labels): value}``."""
    status, kind, body = get(port, "/metrics")
    assert status == 200, body
    assert kind.startswith("text/plain"), kind
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 if absent (a labelled counter appears once it moved)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def scrape_until(port: int, done: Callable[[Samples], bool], *, timeout: float = 30) -> Samples:
    """Scrape until ``done(samples)`` (a counter moved by work still in flight)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(port)
        if done(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.1)


def wait_for(condition: Callable[[], bool], *, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True

#!/usr/bin/env python
"""Server time and query count of the message admin's pages, on seeded data.

    .venv/bin/python benchmarks/seed_messages.py --count 100000 --reset   # once, ~6 min
    .venv/bin/python benchmarks/admin_speed.py [--runs 7] [--json FILE]

Each page is requested through Django's test client in this process (no HTTP server, so
the time is the server's: URL resolution, middleware, admin view, queries, template
rendering), logged in as a superuser. One request first warms caches; then ``--runs``
requests: the median and worst wall time, the median CPU time of this process (Python:
Django, the admin, templates) and the median time spent in queries, the number of
queries and the time the slowest took (``CaptureQueriesContext``). On a busy machine the
wall time grows with the load; CPU and database times show where it goes. Target: every page under
300 ms with a bounded number of queries.

Uses the database ``seed_messages.py`` filled (benchmark project, admin settings;
``BENCH_PG_NAME`` default ``inbound_admin_bench``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench_project.admin_settings")
os.environ.setdefault("BENCH_PG_NAME", "inbound_admin_bench")

LIST = "/admin/inbound_smtp/inboundmessage/"


def pages() -> list[tuple[str, str]]:
    """(name, URL) of each measured page, chosen from the seeded rows."""
    from django.db.models import Count

    from django_inbound_smtp.models import InboundMessage

    messages = InboundMessage.objects.order_by("-received_at")
    newest = messages.values_list("received_at", flat=True).first()
    assert newest is not None, "no messages: run seed_messages.py first"
    rich = (
        messages.annotate(r=Count("recipients", distinct=True), a=Count("attachments"))
        .order_by("-r", "-a", "pk")
        .values_list("pk", flat=True)
        .first()
    )
    month = f"received_at__year={newest.year}&received_at__month={newest.month}"
    texts = messages.filter(text__contains="ORD").order_by("pk")
    some = texts.values_list("queue_id", "text")[texts.count() // 2]
    order_word = next(word for word in some[1].split() if word.startswith("ORD"))
    return [
        ("changelist", LIST),
        ("word search (common word: invoice)", f"{LIST}?q=invoice"),
        ("word search (rare word: one order number)", f"{LIST}?q={order_word}"),
        ("word search (two words: Rechnung Köln)", f"{LIST}?q=Rechnung+K%C3%B6ln"),
        ('phrase search ("password reset")', f"{LIST}?q=%22password+reset%22"),
        ("queue id", f"{LIST}?q={some[0]}"),
        ("operators: from:bank is:failed", f"{LIST}?q=from%3Abank+is%3Afailed"),
        (
            "operators: subject:invoice has:attachment after:",
            f"{LIST}?q=subject%3Ainvoice+has%3Aattachment+after%3A{newest.year - 1}-01-01",
        ),
        ("operator: to:billing@", f"{LIST}?q=to%3Abilling%40"),
        ("date drill-down, searched (invoice, one month)", f"{LIST}?q=invoice&{month}"),
        ("date drill-down, operators (from:bank, one month)", f"{LIST}?q=from%3Abank&{month}"),
        ("detail page (3 recipients, attachments)", f"{LIST}{rich}/change/"),
    ]


def measure(client: Any, url: str, runs: int) -> dict[str, Any]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    response = client.get(url)  # warm: templates, plans, caches
    assert response.status_code == 200, (url, response.status_code)
    times, cpu, database, queries, slowest = [], [], [], [], []
    for _ in range(runs):
        with CaptureQueriesContext(connection) as captured:
            started, started_cpu = time.perf_counter(), time.process_time()
            response = client.get(url)
            times.append((time.perf_counter() - started) * 1000)
            cpu.append((time.process_time() - started_cpu) * 1000)
        assert response.status_code == 200, (url, response.status_code)
        spent = [float(q["time"]) * 1000 for q in captured.captured_queries]
        queries.append(len(spent))
        database.append(sum(spent))
        slowest.append(max(spent))
    context = response.context
    count = context["cl"].result_count if context is not None and "cl" in context else None
    return {
        "url": url,
        "median_ms": round(statistics.median(times), 1),
        "max_ms": round(max(times), 1),
        "cpu_ms": round(statistics.median(cpu), 1),
        "db_ms": round(statistics.median(database), 1),
        "queries": max(queries),
        "slowest_query_ms": round(statistics.median(slowest), 1),
        "results": count,
    }


def _or_dash(value: object) -> str:
    return "-" if value is None else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.test import Client
    from django.test.utils import setup_test_environment

    setup_test_environment()  # the test client records the page's context (result count)

    from django_inbound_smtp.models import InboundMessage

    user = User.objects.filter(username="bench").first() or User.objects.create_superuser(
        "bench", "bench@example.org", "bench"
    )
    client = Client()
    client.force_login(user)
    total = InboundMessage.objects.count()
    print(f"{total} messages; median of {args.runs} runs after one warm-up\n")
    print(
        "| page | median ms | worst ms | Python CPU ms | database ms | queries "
        "| slowest query ms | results |"
    )
    print("|---|---|---|---|---|---|---|---|")
    results = []
    for name, url in pages():
        result = {"page": name, **measure(client, url, args.runs)}
        results.append(result)
        print(
            f"| {name} | {result['median_ms']} | {result['max_ms']} | {result['cpu_ms']} "
            f"| {result['db_ms']} | {result['queries']} "
            f"| {result['slowest_query_ms']} | {_or_dash(result['results'])} |",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps({"messages": total, "pages": results}, indent=2))


if __name__ == "__main__":
    main()

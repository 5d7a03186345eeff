"""The benchmark's table: medians per server, issue 10's targets, the rendering.

Pure functions over the runner's raw results (``{load: {server: [run, ...]}}``), so they
can be tested without running a server.
"""

from __future__ import annotations

import statistics
from typing import Any

#: The column of ours with every sender check in tag mode (``--sender-checks``).
CHECKS = "checks"

# (row label, scenario, metric key, unit, digits)
ROWS = [
    ("1k msg/s  (1 KiB x2000, 20 sess, -d)", "1k", "msg_per_s", "msg/s", 0),
    ("1k server CPU per message", "1k", "cpu_ms_per_msg", "ms", 2),
    ("1k PostgreSQL CPU per message", "1k", "postgres_ms_per_msg", "ms", 2),
    ("1k server CPU (100% = one core)", "1k", "server_cpu_pct", "%", 0),
    ("1k PostgreSQL CPU", "1k", "postgres_cpu_pct", "%", 0),
    ("1k broker (redis) CPU", "1k", "broker_cpu_pct", "%", 0),
    ("1k other processes' CPU (noise)", "1k", "others_cpu_pct", "%", 0),
    ("1k RSS peak", "1k", "rss_peak_mib", "MiB", 1),
    ("1k RSS growth", "1k", "rss_growth_mib", "MiB", 1),
    ("1k-conn msg/s, new conn per msg (x1000)", "1k-conn", "msg_per_s", "msg/s", 0),
    ("1k-conn server CPU per message", "1k-conn", "cpu_ms_per_msg", "ms", 2),
    ("1k-conn server CPU", "1k-conn", "server_cpu_pct", "%", 0),
    ("1k-conn other processes' CPU", "1k-conn", "others_cpu_pct", "%", 0),
    ("latency offered rate (1/2 of own 1k)", "latency", "offered_rate", "msg/s", 0),
    ("latency achieved rate", "latency", "achieved_rate", "msg/s", 0),
    ("latency dot->250 p50", "latency", "p50_ms", "ms", 2),
    ("latency dot->250 p99", "latency", "p99_ms", "ms", 2),
    ("latency dot->250 max", "latency", "max_ms", "ms", 2),
    ("latency send start lag p99", "latency", "start_lag_p99_ms", "ms", 2),
    ("latency server CPU", "latency", "server_cpu_pct", "%", 0),
    ("1m msg/s  (1 MiB x100, 20 sess)", "1m", "msg_per_s", "msg/s", 1),
    ("1m DATA", "1m", "data_mib_per_s", "MiB/s", 1),
    ("1m server CPU", "1m", "server_cpu_pct", "%", 0),
    ("1m RSS peak", "1m", "rss_peak_mib", "MiB", 1),
    ("1m RSS growth", "1m", "rss_growth_mib", "MiB", 1),
    ("25m wall time (20 x 25 MiB concurrent)", "25m", "elapsed_s", "s", 2),
    ("25m DATA", "25m", "data_mib_per_s", "MiB/s", 1),
    ("25m server CPU", "25m", "server_cpu_pct", "%", 0),
    ("25m RSS peak", "25m", "rss_peak_mib", "MiB", 1),
    ("25m RSS growth", "25m", "rss_growth_mib", "MiB", 1),
]


def summarize(
    raw: dict[str, dict[str, list[dict[str, Any]]]], names: list[str]
) -> list[dict[str, Any]]:
    """One row per metric: the median over rounds for each server (``names``)."""
    rows = []
    for label, scenario, key, unit, digits in ROWS:
        values = {}
        for name in names:
            runs = [run for run in raw.get(scenario, {}).get(name, []) if key in run]
            if runs:
                values[name] = statistics.median(run[key] for run in runs)
        if not values:
            continue
        rows.append(
            {
                "metric": label,
                "scenario": scenario,
                "key": key,
                "unit": unit,
                "digits": digits,
                "values": values,
            }
        )
    return rows


def targets(rows: list[dict[str, Any]], *, workers: int) -> list[dict[str, Any]]:
    """Issue 10's targets, each with the number measured in this run (``None``: the run
    did not measure it, e.g. without ``--workers 2`` or with ``--only``)."""

    def value(scenario: str, key: str, name: str | None) -> float | None:
        for row in rows:
            if row["scenario"] == scenario and row["key"] == key:
                found = row["values"].get(name)
                return float(found) if found is not None else None
        return None

    multi = f"store-w{workers}" if workers > 1 else None  # store-wN runs with --workers N
    checks: list[dict[str, Any]] = []

    def at_least(
        name: str, measured: float | None, goal: float | None, unit: str, *, vs: str = ""
    ) -> None:
        met = None if measured is None or goal is None else measured >= goal
        checks.append(
            {"target": name, "measured": measured, "goal": goal, "unit": unit, "met": met,
             "reference": vs}
        )  # fmt: skip

    def at_most(name: str, measured: float | None, goal: float, unit: str, *, strict: bool) -> None:
        met = None
        if measured is not None:
            met = measured < goal if strict else measured <= goal
        checks.append(
            {"target": name, "measured": measured, "goal": goal, "unit": unit, "met": met,
             "reference": ""}
        )  # fmt: skip

    workers_note = "" if workers > 1 else " (run with --workers 2)"
    at_least("1 KiB, store only, 1 process >= 1,500 msg/s", value("1k", "msg_per_s", "store"),
             1500, "msg/s")  # fmt: skip
    at_least("1 KiB, default (inline), 1 process >= 1,000 msg/s",
             value("1k", "msg_per_s", "ours"), 1000, "msg/s")  # fmt: skip
    at_least(f"1 KiB, store only, --workers {max(workers, 2)} >= postfix{workers_note}",
             value("1k", "msg_per_s", multi), value("1k", "msg_per_s", "postfix"),
             "msg/s", vs="postfix")  # fmt: skip
    at_least(f"1 KiB new conn/msg, store only, --workers {max(workers, 2)} >= postfix"
             f"{workers_note}", value("1k-conn", "msg_per_s", multi),
             value("1k-conn", "msg_per_s", "postfix"), "msg/s", vs="postfix")  # fmt: skip
    at_most("p99 dot->250 at half max rate, default < 10 ms",
            value("latency", "p99_ms", "ours"), 10, "ms", strict=True)  # fmt: skip
    at_most("RSS growth, 20 x 25 MiB at once, default <= 64 MiB",
            value("25m", "rss_growth_mib", "ours"), 64, "MiB", strict=False)  # fmt: skip
    at_least("DATA rate, 1 MiB messages, default >= 150 MiB/s",
             value("1m", "data_mib_per_s", "ours"), 150, "MiB/s")  # fmt: skip
    return checks


def fmt(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def noisy_loads(
    raw: dict[str, dict[str, list[dict[str, Any]]]], threshold: float = 20.0
) -> list[str]:
    """Loads during which other processes used more than ``threshold``% of a core."""
    return [
        f"{scenario}/{kind}#{index + 1}: {run['others_cpu_pct']:.0f}%"
        for scenario, by_kind in raw.items()
        for kind, runs in by_kind.items()
        for index, run in enumerate(runs)
        if run.get("others_cpu_pct", 0) > threshold
    ]


def render_target(check: dict[str, Any]) -> str:
    if check["met"] is None:
        return f"  [not measured] {check['target']}"
    goal = f" ({check['reference']}: {check['goal']:,.1f})" if check["reference"] else ""
    state = "met" if check["met"] else "MISSED"
    return f"  [{state}] {check['target']}: {check['measured']:,.1f} {check['unit']}{goal}"


def render(
    rows: list[dict[str, Any]],
    checks: list[dict[str, Any]],
    meta: dict[str, Any],
    names: list[str],
) -> str:
    host = meta["host"]
    width = max(9, *(len(name) for name in names))
    lines = [
        f"django-inbound-smtp benchmark  db={meta['db']['engine']}  rounds={meta['rounds']} "
        f"(median)  {meta['timestamp']}",
        f"code: {meta['code']['source']} at {meta['code']['commit'][:10]}"
        + (" + uncommitted changes in django_inbound_smtp/" if meta["code"]["dirty"] else ""),
        f"host: {host['cpus']} CPUs, load average before {host['loadavg_before'][0]:.2f}, "
        f"after {host['loadavg_after'][0]:.2f}",
        "",
        f"{'metric':42} {'unit':6} " + " ".join(f"{name:>{width}}" for name in names),
        f"{'-' * 42} {'-' * 6} " + " ".join("-" * width for _ in names),
    ]
    if meta["inbound_smtp_overrides"]:
        lines.insert(3, f"INBOUND_SMTP overrides for ours: {meta['inbound_smtp_overrides']}")
    for row in rows:
        cells = " ".join(
            f"{fmt(row['values'].get(name), row['digits']):>{width}}" for name in names
        )
        lines.append(f"{row['metric']:42} {row['unit']:6} {cells}")
    lines += ["", *LEGEND]
    fsync = meta.get("postfix_fsync") or {}
    if fsync.get("verified"):
        lines.append(
            f"  Postfix fsyncs checked with strace: {fsync['fsyncs']} for "
            f"{fsync['messages']} messages."
        )
    if noisy := meta.get("noisy_loads"):
        shown = ", ".join(noisy[:6]) + (f", ... ({len(noisy)} in all; see the JSON)" if len(
            noisy) > 6 else "")  # fmt: skip
        lines += ["", f"WARNING: other processes used > 20% of a core during: {shown}"]
    if CHECKS in names:
        lines += [
            "",
            f"checks: every sender check in tag mode (DNSBL zone, iprev, sender domain, SPF "
            f"and HELO SPF, DKIM, DMARC), DNS server on loopback answering after "
            f"{meta.get('dns_delay_ms', 0):.0f} ms, resolver cache {meta.get('dns_cache', 0)}.",
        ]
    if checks:
        lines += ["", "targets (issue 10; PostgreSQL, same run):"]
        lines += [render_target(check) for check in checks]
        if meta.get("quick"):
            lines.append("  (--quick: a tenth of the messages, 5 x 25 MiB: a smoke test only)")
    return "\n".join(lines)


LEGEND = [
    "ours: manage.py smtpd, processing inline (default); store: ours storing only",
    "(DISPATCH=celery, private redis-server, no worker); store-wN: the same with",
    "smtpd --workers N; bare: aiosmtpd answering 250, storing nothing; postfix: a private",
    "Postfix queueing each message (fsync) and putting it on hold. CPU: all processes of",
    "the server (Postfix: master, smtpd, cleanup, qmgr, ...); memory of several",
    "processes: the sum of their PSS (shared pages split among them), not of their RSS.",
]

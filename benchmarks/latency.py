"""Latency from the end of data to the reply: time from writing the final ``.CRLF``
to the arrival of the ``250`` line, under a paced (open-loop) load.

``SESSIONS`` connections each send messages one after another on a fixed schedule
(session ``i`` sends its ``k``-th message at ``start + (k * SESSIONS + i) / RATE``),
so together they offer ``RATE`` messages per second for ``DURATION`` seconds. A
message that is late because the previous one on its session was slow starts as soon
as possible; how late sends started is reported too (``start_lag_*``): a large lag
means the server (or this client) could not keep up with the offered rate.

For each message: ``MAIL``, ``RCPT``, ``DATA``, the header and body in one write, then
``time.perf_counter()`` just before writing ``.CRLF`` and again when the reply line
arrives. Every recipient address is unique (``<session>-<k>-<tag>@bench.test``), so a
storing server sees no duplicates. Prints one JSON object on stdout.

    python benchmarks/latency.py HOST PORT --rate 150 --sessions 20 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time

CLIENT_NAME = "latency.client.bench"


class ReplyError(Exception):
    pass


async def read_reply(reader: asyncio.StreamReader) -> bytes:
    """One (possibly multi-line) reply; returns its last line."""
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("server closed the connection")
        if line[3:4] != b"-":
            return line


async def expect(reader: asyncio.StreamReader, code: bytes) -> None:
    line = await read_reply(reader)
    if not line.startswith(code):
        raise ReplyError(line.decode("ascii", "replace").strip())


def message_body(size: int, session: int, k: int, tag: str) -> bytes:
    header = (
        f"From: <latency@{CLIENT_NAME}>\r\n"
        f"To: <{session}-{k}-{tag}@bench.test>\r\n"
        f"Subject: latency {session}-{k}\r\n"
        f"Message-ID: <{session}.{k}.{tag}@{CLIENT_NAME}>\r\n\r\n"
    ).encode("ascii")
    line = b"X" * 78 + b"\r\n"
    body = line * (size // len(line)) + b"Y" * (size % len(line))
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return header + body


async def session(
    index: int,
    args: argparse.Namespace,
    start: float,
    latencies: list[float],
    lags: list[float],
    errors: list[str],
) -> None:
    reader, writer = await asyncio.open_connection(args.host, args.port)
    try:
        await expect(reader, b"220")
        writer.write(f"EHLO {CLIENT_NAME}\r\n".encode("ascii"))
        await expect(reader, b"250")
        period = args.sessions / args.rate
        k = 0
        while True:
            due = start + (k + index / args.sessions) * period
            if due - start >= args.duration:
                break
            now = time.perf_counter()
            if due > now:
                await asyncio.sleep(due - now)
            lags.append(max(0.0, time.perf_counter() - due))
            try:
                writer.write(f"MAIL FROM:<latency@{CLIENT_NAME}>\r\n".encode("ascii"))
                await expect(reader, b"250")
                writer.write(f"RCPT TO:<{index}-{k}-{args.tag}@bench.test>\r\n".encode("ascii"))
                await expect(reader, b"250")
                writer.write(b"DATA\r\n")
                await expect(reader, b"354")
                writer.write(message_body(args.size, index, k, args.tag))
                await writer.drain()
                t0 = time.perf_counter()
                writer.write(b".\r\n")
                line = await read_reply(reader)
                t1 = time.perf_counter()
                if line.startswith(b"250"):
                    latencies.append(t1 - t0)
                else:
                    errors.append(line.decode("ascii", "replace").strip())
            except ReplyError as error:
                errors.append(str(error))
                writer.write(b"RSET\r\n")
                await expect(reader, b"250")
            k += 1
        writer.write(b"QUIT\r\n")
        await writer.drain()
        await read_reply(reader)
    finally:
        writer.close()


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    latencies: list[float] = []
    lags: list[float] = []
    errors: list[str] = []
    start = time.perf_counter() + 0.2  # all sessions connect first
    results = await asyncio.gather(
        *(session(i, args, start, latencies, lags, errors) for i in range(args.sessions)),
        return_exceptions=True,
    )
    elapsed = time.perf_counter() - start
    failures = [repr(r) for r in results if isinstance(r, BaseException)]
    ms = [1000 * v for v in latencies]
    return {
        "offered_rate": args.rate,
        "sessions": args.sessions,
        "duration_s": args.duration,
        "size": args.size,
        "accepted": len(latencies),
        "refused": len(errors),
        "refusals": errors[:5],
        "session_failures": failures[:5],
        "achieved_rate": len(latencies) / elapsed if elapsed > 0 else 0.0,
        "p50_ms": quantile(ms, 0.50),
        "p90_ms": quantile(ms, 0.90),
        "p99_ms": quantile(ms, 0.99),
        "max_ms": max(ms) if ms else float("nan"),
        "mean_ms": statistics.fmean(ms) if ms else float("nan"),
        "start_lag_p50_ms": 1000 * quantile(lags, 0.50),
        "start_lag_p99_ms": 1000 * quantile(lags, 0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--rate", type=float, required=True, help="messages per second, total")
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of offered load")
    parser.add_argument("--size", type=int, default=1024, help="body bytes per message")
    parser.add_argument("--tag", default="lat", help="makes this run's recipients unique")
    args = parser.parse_args()
    if args.rate <= 0 or args.sessions <= 0:
        parser.error("--rate and --sessions must be positive")
    result = asyncio.run(main_async(args))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

"""The baseline: a bare aiosmtpd server that answers ``250 OK`` to DATA and stores nothing.

Same event loop model as ``manage.py smtpd`` (one asyncio loop in the main thread, one
``aiosmtpd.smtp.SMTP`` protocol per connection), aiosmtpd's own DATA reader, no
recipient checks, no database, no file. Prints ``listening on HOST:PORT`` once bound;
SIGINT/SIGTERM stop it.

    python benchmarks/bare_server.py [--host 127.0.0.1] [--port 0]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

from aiosmtpd.smtp import SMTP

DATA_SIZE_LIMIT = 40 * 1024 * 1024
HOSTNAME = "mx.bench"  # fixed: aiosmtpd would otherwise call getfqdn() per connection


class DiscardHandler:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    handler = DiscardHandler()

    def factory() -> SMTP:
        return SMTP(
            handler,
            hostname=HOSTNAME,
            data_size_limit=DATA_SIZE_LIMIT,
            decode_data=False,
            enable_SMTPUTF8=False,
            loop=loop,
        )

    server = await loop.create_server(factory, host=host, port=port)
    bound = server.sockets[0].getsockname()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    print(f"listening on {bound[0]}:{bound[1]}", flush=True)
    await stop.wait()
    server.close()
    try:
        await asyncio.wait_for(server.wait_closed(), timeout=2)
    except TimeoutError:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port))
    sys.exit(0)


if __name__ == "__main__":
    main()

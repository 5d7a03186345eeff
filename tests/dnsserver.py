"""A real DNS server on loopback for the tests: UDP and TCP on 127.0.0.1, port 0.

Zone data is a dict per test: ``{"name": [("TXT", '"v=spf1 -all"'), ("MX", "10 mx.x.")]}``
(rdata in zone-file text form). Names under a ``timeout`` suffix are never answered,
names under a ``servfail`` suffix get SERVFAIL. A name that holds records of other
types (or has names below it) is NODATA, anything else NXDOMAIN. Every question is
logged, so tests can count lookups.
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
import time
from collections.abc import Iterable, Mapping, Sequence

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

Zone = Mapping[str, Sequence[tuple[str, str]]]


def _key(name: str | dns.name.Name) -> str:
    return str(name).lower().rstrip(".")


class DnsServer:
    """Serves the loaded zone until :meth:`stop`."""

    def __init__(self, *, delay: float = 0.0) -> None:
        #: Seconds each answer waits (the benchmark's "DNS answering in 1 ms").
        self.delay = delay
        self.records: dict[str, list[tuple[str, str]]] = {}
        self.timeout_suffixes: set[str] = set()
        self.servfail_suffixes: set[str] = set()
        self.questions: list[tuple[str, str]] = []
        self.ttl = 300
        self._lock = threading.Lock()
        self._udp, self._tcp = self._bind()
        self._udp.dns = self._tcp.dns = self
        port = self._udp.server_address[1]
        self.port = port
        self._threads = [
            threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            for server in (self._udp, self._tcp)
        ]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _bind(attempts: int = 50) -> tuple[_UDPServer, _TCPServer]:
        # UDP and TCP on the same ephemeral port: the kernel picks the UDP one, which
        # may be taken for TCP by another process; then pick again.
        for _ in range(attempts):
            udp = _UDPServer(("127.0.0.1", 0), _UDPHandler)
            try:
                return udp, _TCPServer(("127.0.0.1", udp.server_address[1]), _TCPHandler)
            except OSError:
                udp.server_close()
        raise OSError("no port free for both UDP and TCP on 127.0.0.1")

    @property
    def address(self) -> str:
        """``"127.0.0.1:PORT"``: what ``INBOUND_SMTP["DNS"]["NAMESERVERS"]`` takes."""
        return f"127.0.0.1:{self.port}"

    def load(self, zone: Zone) -> None:
        """Add records (replacing those of the same names)."""
        with self._lock:
            for name, records in zone.items():
                self.records[_key(name)] = list(records)

    def add(self, name: str, rdtype: str, rdata: str) -> None:
        with self._lock:
            self.records.setdefault(_key(name), []).append((rdtype, rdata))

    def never_answer(self, suffix: str) -> None:
        self.timeout_suffixes.add(_key(suffix))

    def servfail(self, suffix: str) -> None:
        self.servfail_suffixes.add(_key(suffix))

    def asked(self, rdtype: str | None = None) -> list[str]:
        """Names asked so far (of ``rdtype`` only, if given)."""
        return [name for name, kind in self.questions if rdtype is None or kind == rdtype]

    def stop(self) -> None:
        for server in (self._udp, self._tcp):
            server.shutdown()
            server.server_close()

    @staticmethod
    def _under(name: str, suffixes: Iterable[str]) -> bool:
        return any(name == s or name.endswith("." + s) for s in suffixes)

    def answer(self, wire: bytes, *, max_size: int) -> bytes | None:
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        name, rdtype = _key(question.name), dns.rdatatype.to_text(question.rdtype)
        with self._lock:
            self.questions.append((name, rdtype))
            records = list(self.records.get(name, ()))
            exists = name in self.records or any(k.endswith("." + name) for k in self.records)
        if self._under(name, self.timeout_suffixes):
            return None
        if self.delay:
            time.sleep(self.delay)
        if self._under(name, self.servfail_suffixes):
            response.set_rcode(dns.rcode.SERVFAIL)
        elif not exists:
            response.set_rcode(dns.rcode.NXDOMAIN)
        else:
            matching = [rdata for kind, rdata in records if kind.upper() == rdtype]
            if matching:
                response.answer.append(
                    dns.rrset.from_text_list(question.name, self.ttl, "IN", rdtype, matching)
                )
        if query.edns >= 0:
            max_size = max(max_size, query.payload)
        try:
            return response.to_wire(max_size=max_size)
        except dns.exception.TooBig:
            response.answer.clear()
            response.flags |= dns.flags.TC
            return response.to_wire()


class _UDPServer(socketserver.ThreadingUDPServer):
    daemon_threads = True
    dns: DnsServer


class _TCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    dns: DnsServer


class _UDPHandler(socketserver.BaseRequestHandler):
    server: _UDPServer

    def handle(self) -> None:
        data, sock = self.request
        reply = self.server.dns.answer(data, max_size=512)
        if reply is not None:
            sock.sendto(reply, self.client_address)


class _TCPHandler(socketserver.BaseRequestHandler):
    server: _TCPServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(5)
        try:
            while header := sock.recv(2):
                (length,) = struct.unpack("!H", header)
                data = b""
                while len(data) < length:
                    chunk = sock.recv(length - len(data))
                    if not chunk:
                        return
                    data += chunk
                reply = self.server.dns.answer(data, max_size=65535)
                if reply is None:
                    return
                sock.sendall(struct.pack("!H", len(reply)) + reply)
        except OSError:
            return

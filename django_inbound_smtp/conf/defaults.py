"""The defaults of every ``INBOUND_SMTP`` key, each with the reason for its value.

Pure data. The README's configuration table lists the same keys (a test compares them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["DEFAULTS"]

DEFAULTS: Mapping[str, Any] = {
    # Where `manage.py smtpd` listens when no address is given. Loopback by default:
    # listening on a public interface is a deployment decision.
    "BIND": "127.0.0.1:8025",
    # Name in the greeting, the EHLO reply and our Received: line. None: the host's FQDN,
    # looked up once at start-up (aiosmtpd would otherwise look it up per connection).
    "HOSTNAME": None,
    # Largest message accepted, in bytes; advertised with SIZE (RFC 1870). Haraka and
    # Gmail use 25 MiB; bigger limits mean more disk per concurrent transfer.
    "MAX_MESSAGE_SIZE": 25 * 1024 * 1024,
    # Recipients per transaction. RFC 5321 §4.5.3.1.8 requires at least 100; more lets
    # one message fan out unboundedly (Postfix allows 1000).
    "MAX_RECIPIENTS": 100,
    # Longest command line in octets (RFC 5321 §4.5.3.1.4: 512, MAIL may add its
    # parameters); longer gets 500 5.5.2. Bounds what one line can make us buffer.
    "COMMAND_LINE_LIMIT": 512,
    # Offer SMTPUTF8 (RFC 6531): internationalized addresses, with the parameter.
    "SMTPUTF8": True,
    # Seconds a client may stay silent before `421 4.4.2` and close (RFC 5321 §4.5.3.2
    # asks for at least 5 minutes). Also bounds a stalled DATA transfer.
    "COMMAND_TIMEOUT": 300,
    # Refused recipients per session before `421 4.7.0` and close: a client guessing
    # addresses (directory harvest) learns little before it has to reconnect.
    "RCPT_ERROR_LIMIT": 20,
    # CR or LF bytes in DATA outside a CRLF: "normalize" (Postfix's default: bare LF
    # becomes CRLF, lone CR a space, so every later parser splits lines alike),
    # "keep" (store byte-exact) or "reject" (550 5.5.2). The message is flagged in
    # every mode. Only CRLF.CRLF ever ends DATA.
    "BARE_NEWLINES": "normalize",
    # Longest DATA line in octets, or None: keep lines of any length (Postfix keeps them
    # too; aiosmtpd rejected over 998). Set 998 (RFC 5322 §2.1.1) to refuse such mail
    # with 500 5.5.2.
    "DATA_LINE_LIMIT": None,
    # Clients that talk before our greeting, or pipeline before seeing PIPELINING in our
    # EHLO reply (spam bots, SMTP smuggling tools): "allow" (answered in order) or
    # "reject" (554 5.5.0 and close, like Postfix's postscreen).
    "EARLY_TALKERS": "allow",
    # Seconds to wait before the greeting, so early talkers show themselves (postscreen's
    # pregreet test). 0: greet at once.
    "GREETING_DELAY": 0,
    # Seconds a whole DATA transfer may take, however steadily it trickles (RFC 5321
    # §4.5.3.2.6 gives the client 10 minutes): stops slow-drip sessions.
    "DATA_TIMEOUT": 600,
    # Concurrent sessions in total and per client address, before `421`: each session
    # costs a file descriptor and up to MAX_MESSAGE_SIZE of memory (Postfix: 100 / 50).
    "MAX_SESSIONS": 100,
    "MAX_SESSIONS_PER_CLIENT": 20,
    # Times a command may be used in one session before `421 4.7.0` and close: NOOP and
    # RSET keep-alive floods, VRFY/EXPN harvesting ("*" is every other command).
    "COMMAND_CALL_LIMITS": {"NOOP": 20, "RSET": 50, "VRFY": 10, "EXPN": 10, "HELP": 10, "*": 5000},
    # Certificate chain and private key (PEM paths) for STARTTLS and the implicit-TLS
    # listener. None: no TLS offered. `manage.py smtpd --tls-cert/--tls-key` override
    # them; SIGHUP re-reads the files (certificate renewal without a restart).
    "TLS_CERTFILE": None,
    "TLS_KEYFILE": None,
    # Refuse MAIL before STARTTLS (530 5.7.0). Never for a public MX (RFC 3207 §4: a
    # publicly-referenced server must not require TLS); for private or submission use.
    "TLS_REQUIRED": False,
    # "HOST:PORT" of a second listener that speaks TLS from the first byte (implicit
    # TLS, RFC 8314, e.g. port 465). None: no such listener.
    "TLS_BIND": None,
    # "HOST:PORT" of a submission listener (RFC 6409, e.g. port 587) where clients must
    # authenticate (AUTH PLAIN/LOGIN after STARTTLS, checked by Django's authentication
    # backends) before MAIL. Needs TLS_CERTFILE/TLS_KEYFILE. None: no such listener;
    # the MX listener never offers AUTH.
    "SUBMISSION_BIND": None,
    # Failed AUTH attempts per session before 421 and close, and per client address
    # within AUTH_FAILURE_WINDOW seconds before every attempt is refused (brute force).
    "AUTH_MAX_FAILURES": 3,
    "AUTH_FAILURES_PER_CLIENT": 10,
    "AUTH_FAILURE_WINDOW": 600,
    # Networks (CIDR) of load balancers that speak the PROXY protocol (v1 or v2) to us.
    # When set, every connection must start with a PROXY header, accepted only from
    # these addresses; the client address it carries is the one stored and checked.
    # Empty: PROXY protocol off (never trust a header from just anyone).
    "PROXY_PROTOCOL_FROM": [],
    # Seconds a proxy has to send its header.
    "PROXY_PROTOCOL_TIMEOUT": 5,
    # Dotted paths of recipient validators, asked in order at RCPT time. The first decides
    # signed reply addresses (and abstains while REPLY_ADDRESS_DOMAINS is empty).
    "RECIPIENT_VALIDATORS": [
        "django_inbound_smtp.validators.reply_addresses.reply_address_validator",
        "django_inbound_smtp.validators.models.mailbox_validator",
    ],
    # Routes tried in order for each recipient after the commit (routing.py): the first
    # match names the handler. Mailboxes' own handlers come after these.
    "ROUTES": [],
    # Seconds the recipient directory (active mailboxes and served domains, and the answers
    # of validators marked cacheable) may be used before it is read again: RCPT costs no
    # query in between. A change to mailboxes reaches every process within this bound.
    # 0: no caching, every RCPT queries the database.
    "DIRECTORY_TTL": 5,
    # Active mailboxes above which the directory is never loaded whole (memory): it then
    # remembers this many addresses and domains, least recently used dropped first.
    "DIRECTORY_MAX_SIZE": 100_000,
    # user+tag@domain is delivered to user@domain, keeping the tag. "" turns it off.
    "PLUS_DELIMITER": "+",
    # STORAGES alias the raw messages are written to.
    "STORAGE": "default",
    # Folder (key prefix) inside that storage.
    "STORAGE_PREFIX": "inbound_smtp",
    # Folder for messages being received once they pass SPOOL_MEMORY_LIMIT. None: a
    # "spool" folder beside the raw messages of a local storage (so storing is a hard
    # link, no copy), or one in the temporary folder for remote storage.
    "SPOOL_DIR": None,
    # Bytes of a message held in memory while it arrives before it spills to the spool
    # folder; bounds memory per session whatever the message size.
    "SPOOL_MEMORY_LIMIT": 256 * 1024,
    # Bytes that must stay free where messages are spooled and stored; below that MAIL
    # gets "452 4.3.1" (as Postfix's queue_minfree) instead of failing mid-message.
    "MIN_FREE_SPACE": 100 * 1024 * 1024,
    # Limits on parsing hostile MIME structure (Postfix mime_nesting_limit and
    # header_size_limit); a message past one is kept raw and marked, never lost.
    "PARSE_MAX_DEPTH": 100,
    "PARSE_MAX_PARTS": 1000,
    "PARSE_MAX_HEADER_BYTES": 100 * 1024,
    # Where processing (signal receivers, mailbox handlers) runs: "inline" (threads of
    # the process that stored the message), "celery" (a worker), "tasks" (django.tasks,
    # Django 6+), "memory" (record only: tests), a dotted path to a Dispatcher subclass,
    # or "auto": celery when CELERY_BROKER_URL is set, inline otherwise.
    "DISPATCH": "auto",
    # Dotted path of the project's Celery app (e.g. "proj.celery.app"). None: the one
    # Celery app the project created. Celery keeps its "current app" per thread, and
    # our background threads would otherwise get Celery's unconfigured fallback app.
    "CELERY_APP": None,
    # Threads (each with its own database connection) that do smtpd's database work:
    # recipient lookups, storing batches (one at a time: group commit), AUTH, directory
    # reloads. "auto": 1 on SQLite (one writer at a time; more threads would only queue
    # on its lock), 4 on other databases, so lookups never wait behind a commit.
    "DATABASE_THREADS": "auto",
    # Threads that run inline processing, or send Celery tasks, in each process.
    "PROCESSING_CONCURRENCY": 4,
    # Seconds after which the sweeper schedules again a message still waiting (task lost,
    # broker down) or still claimed by a worker that died; also the first retry delay of a
    # failed message (then doubled per attempt).
    "REDISPATCH_AFTER": 300,
    # Seconds a worker's claim on a message lasts without renewal; a live worker renews
    # it every third of that, so only a dead worker's claim expires and is taken over.
    "PROCESSING_LEASE": 60,
    # Processing attempts before a failed message is left for a person (admin action or
    # manage.py inbound_reprocess).
    "MAX_ATTEMPTS": 5,
    # Seconds between sweeps inside `manage.py smtpd`; 0 turns the built-in sweeper off
    # (run `manage.py inbound_dispatch` or the Celery beat task instead).
    "SWEEP_INTERVAL": 60,
    # Seconds a stopping server waits for transfers and commits in flight.
    "SHUTDOWN_GRACE": 30,
    # Sender checks and what a failure does: "off" (not checked), "tag" (checked and
    # recorded, never refused), "tempfail" (451 4.7.x: the sender retries) or "reject"
    # (550 5.7.x). A DNS timeout or SERVFAIL is never a reject. Missing keys keep
    # their default. DNSBL and IPREV are looked up from EHLO and applied at MAIL;
    # SENDER_DOMAIN and SPF at MAIL; DKIM (with ARC) and DMARC after DATA.
    "SENDER_CHECKS": {
        "DNSBL": "tag",
        "IPREV": "tag",
        "SENDER_DOMAIN": "tag",
        "SPF": "tag",
        "DKIM": "tag",
        "DMARC": "tag",
    },
    # DNS block/allow lists in postscreen's syntax, "zone[=127.0.0.x[;...]]*weight"
    # (weight < 0 for an allowlist such as list.dnswl.org). Empty: no DNSBL lookups.
    "DNSBL_ZONES": [],
    # Summed weight at which a client counts as listed (postscreen_dnsbl_threshold).
    "DNSBL_THRESHOLD": 1,
    # The resolver: "NAMESERVERS" ("host[:port]" strings; empty: /etc/resolv.conf),
    # "TIMEOUT" seconds per lookup, "CACHE_SIZE" answers kept (TTL-aware; 0: none).
    "DNS": {"NAMESERVERS": [], "TIMEOUT": 3.0, "CACHE_SIZE": 5000},
    # Seconds all checks of one SMTP phase may take together; past it, the unfinished
    # ones are recorded as temperror.
    "SENDER_CHECKS_TIMEOUT": 10,
    # authserv-id of our Authentication-Results field (RFC 8601 §2.5). None: HOSTNAME.
    # Incoming fields claiming it are renamed X-Original-Authentication-Results.
    "AUTHSERV_ID": None,
    # "HOST:PORT" of the HTTP listener serving /metrics (Prometheus), /healthz and
    # /readyz; `manage.py smtpd --metrics` overrides it. None: no listener. Needs the
    # metrics extra (prometheus-client). Loopback by default: metrics name your traffic.
    "METRICS_BIND": None,
    # Seconds the queue gauges (messages by status, oldest waiting) are reused between
    # scrapes: however many scrapers, the database is asked at most this often.
    "METRICS_CACHE": 10,
    # Seconds /readyz waits for the database and the folder checks before it says 503.
    "READY_TIMEOUT": 3,
    # Free bytes /readyz requires in every message folder. None: MIN_FREE_SPACE (below
    # which MAIL is refused anyway); set it higher to be taken out of rotation earlier.
    "READY_MIN_FREE_SPACE": None,
    # Seconds the oldest received-but-unprocessed message may wait before
    # `manage.py inbound_status` exits 1 (warning) or 2 (critical). Above
    # REDISPATCH_AFTER, so a message the sweeper is about to retry is not an alarm.
    "STUCK_WARNING_AFTER": 600,
    "STUCK_CRITICAL_AFTER": 1800,
    # Days finished messages are kept, per status, counted from their processing
    # (processed, failed) or receipt (duplicate); None keeps them for ever. Everything
    # is kept by default, so an upgrade deletes nothing. received and processing
    # messages are never pruned, nor held ones (see README "Retention").
    "RETENTION": {"processed": None, "failed": None, "duplicate": None},
    # Seconds between prunes inside `manage.py smtpd` (in a thread of its own, off the
    # event loop); 0: smtpd never prunes (run `manage.py inbound_prune` or the Celery
    # task django_inbound_smtp.tasks.prune instead). Only runs when RETENTION limits
    # something.
    "PRUNE_INTERVAL": 3600,
    # Domains of signed reply addresses (reply+<token>@domain, see reply_addresses). The
    # first is the one new addresses use. Empty: the feature is off and such addresses
    # are left to the other validators. Only these domains: never an open door.
    "REPLY_ADDRESS_DOMAINS": [],
    # Local part before the separator of a reply address, and of a signed return path
    # (VERP). Keep them short: a token needs up to 56 of the local part's 64 octets.
    "REPLY_ADDRESS_PREFIX": "reply",
    "RETURN_PATH_PREFIX": "bounce",
    # Between the prefix and the token. "+" is what most MTAs treat as a subaddress.
    "REPLY_ADDRESS_SEPARATOR": "+",
    # Seconds a new reply address or return path stays valid; None: no expiry.
    # 90 days: long enough for a late reply, short enough that a leaked one dies.
    "REPLY_ADDRESS_EXPIRY": 90 * 24 * 3600,
    # Received: fields naming our own host (their "by" clause) a message may carry
    # before it is a loop (kind "loop"): more than this many. Our own line counts, so 3
    # lets mail pass through us twice more (a forward that comes back) and stops a
    # forwarding loop at its third round trip, long before MTA hop limits (Postfix 50).
    "LOOP_MAX_OWN_HOPS": 3,
}

"""Settings of the test project. ``INBOUND_TEST_DB=postgres`` runs on PostgreSQL."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import django

BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = "tests-only-not-secret"  # noqa: S105 - test settings
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    # The browser tests' live server serves the admin's CSS and scripts through it.
    "django.contrib.staticfiles",
    "django_inbound_smtp",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # As in a default project: the admin's HTML preview frame must survive it.
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "tests.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

# One scratch folder per test process: raw messages and the SQLite test database.
SCRATCH = Path(os.environ.get("INBOUND_TEST_SCRATCH") or tempfile.mkdtemp(prefix="inbound-smtp-"))
os.environ.setdefault("INBOUND_TEST_SCRATCH", str(SCRATCH))

if os.environ.get("INBOUND_TEST_DB") == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("INBOUND_TEST_PG_NAME", "inbound_smtp"),
            "USER": os.environ.get("INBOUND_TEST_PG_USER", "postgres"),
            "HOST": os.environ.get("INBOUND_TEST_PG_HOST", "127.0.0.1"),
            "PORT": os.environ.get("INBOUND_TEST_PG_PORT", "5432"),
            "TEST": {"NAME": os.environ.get("INBOUND_TEST_PG_TEST_NAME", "test_inbound_smtp")},
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("INBOUND_TEST_DB_SQLITE_MAIN") or str(SCRATCH / "db.sqlite3"),
            # A file, not the in-memory default: the server's ORM thread, processing
            # threads and the test share it, and shared-cache memory databases fail
            # with "table is locked" instead of waiting.
            "TEST": {
                "NAME": os.environ.get("INBOUND_TEST_SQLITE_NAME") or str(SCRATCH / "test.sqlite3")
            },
            "OPTIONS": {
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL",
            },
        }
    }

STATIC_URL = "static/"

STORAGES = {
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(SCRATCH / "media")},
    },
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

INBOUND_SMTP = {
    "HOSTNAME": "mx.test",
    "SHUTDOWN_GRACE": 5,
    # The Celery worker tests start workers with a short lease (env), so a killed
    # worker's claim expires within the test.
    "PROCESSING_LEASE": float(os.environ.get("INBOUND_TEST_LEASE", "60")),
    # Sender checks are off unless a test turns them on with the loopback DNS server
    # (tests/dnsserver.py). Tests never ask the machine's resolver: the nameserver
    # below is a closed loopback port, so a stray lookup fails fast.
    "SENDER_CHECKS": {
        "DNSBL": "off",
        "IPREV": "off",
        "SENDER_DOMAIN": "off",
        "SPF": "off",
        "DKIM": "off",
        "DMARC": "off",
    },
    "DNS": {"NAMESERVERS": ["127.0.0.1:9"], "TIMEOUT": 1.0},
}

# smtpd subprocesses of tests/test_directory.py use a short directory staleness bound.
if "INBOUND_TEST_DIRECTORY_TTL" in os.environ:
    INBOUND_SMTP["DIRECTORY_TTL"] = float(os.environ["INBOUND_TEST_DIRECTORY_TTL"])

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"null": {"class": "logging.NullHandler"}},
    "loggers": {"django_inbound_smtp": {"handlers": ["null"], "level": "INFO"}},
}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed only

# Django 6.1 replaces EMAIL_BACKEND with MAILERS and warns when neither is set; the test
# runner swaps every mailer for the locmem backend (forwarding tests read mail.outbox).
if django.VERSION >= (6, 1):
    MAILERS = {"default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}}

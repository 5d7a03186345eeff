"""Settings of the example project: a local demo, not a deployment template.

``make run`` serves the admin on http://127.0.0.1:8000/admin/ and the inbound SMTP
server on 127.0.0.1:8025. Everything lives next to this folder by default;
``EXAMPLE_DB_PATH`` and ``EXAMPLE_MEDIA_ROOT`` move the database and the stored mail
(the tests point them at a temporary folder).
"""

import os
from pathlib import Path

import django

PROJECT_DIR = Path(__file__).resolve().parent.parent

# Local demo only: never deploy with this key or with DEBUG on.
SECRET_KEY = "example-project-not-secret"  # noqa: S105 - demo settings
DEBUG = True
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_inbound_smtp",
    "inbox",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "example_project.urls"
WSGI_APPLICATION = "example_project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("EXAMPLE_DB_PATH") or str(PROJECT_DIR / "db.sqlite3"),
        "OPTIONS": {
            # smtpd and runserver write to the same file: wait for the lock instead of
            # failing, and take the write lock when a transaction starts (no upgrade
            # deadlocks between the two processes).
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            # WAL lets the admin read while smtpd writes. synchronous=FULL is what makes
            # a 250 survive power loss: every commit is fsynced before the server
            # answers (WAL's default, NORMAL, can lose the last commits on a power cut).
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL",
        },
    }
}
# PostgreSQL instead, when its host is given (deploy/compose.yaml does; needs psycopg).
if os.environ.get("EXAMPLE_POSTGRES_HOST"):
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": os.environ["EXAMPLE_POSTGRES_HOST"],
            "NAME": os.environ.get("EXAMPLE_POSTGRES_DB", "inbound"),
            "USER": os.environ.get("EXAMPLE_POSTGRES_USER", "inbound"),
            "PASSWORD": os.environ.get("EXAMPLE_POSTGRES_PASSWORD", ""),
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

STORAGES = {
    # Raw messages (.eml) are written here, under INBOUND_SMTP["STORAGE_PREFIX"].
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {
            "location": os.environ.get("EXAMPLE_MEDIA_ROOT") or str(PROJECT_DIR / "media"),
        },
    },
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
STATIC_URL = "static/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# Ticket notifications (inbox/notifications.py) are printed, not sent: a local demo.
# Django 6.1 replaces EMAIL_BACKEND with MAILERS (and deprecates the old setting).
if django.VERSION >= (6, 1):
    MAILERS = {"default": {"BACKEND": "django.core.mail.backends.console.EmailBackend"}}
else:
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
DEFAULT_FROM_EMAIL = "Support <support@example.test>"

INBOUND_SMTP = {
    "HOSTNAME": "mx.example.test",
    # The project's Celery app, used when a broker is configured (see celery.py).
    "CELERY_APP": "example_project.celery.app",
    # Retention: processed mail goes after 30 days, failures after 90, duplicates after 7
    # (held messages and anything not processed yet never); smtpd prunes every hour
    # (PRUNE_INTERVAL), beat once a day (below). Remove it to keep everything.
    "RETENTION": {"processed": 30, "failed": 90, "duplicate": 7},
    # Signed reply addresses (reply+<token>@example.test) name the ticket a reply is for:
    # notifications carry them (inbox/notifications.py), RCPT refuses forged and expired
    # ones with 550 5.1.1.
    "REPLY_ADDRESS_DOMAINS": ["example.test"],
    # Which code handles which recipient, first match wins (manage.py inbound_route
    # ADDRESS explains a decision). Replies to tickets, regular mail only: bounces,
    # auto-replies, list mail and loops never become comments.
    "ROUTES": [
        {
            "name": "ticket replies",
            "address": "reply+*@example.test",
            "kinds": ["regular"],
            "handler": "inbox.comments.add_comment",
        },
    ],
    # Every other key keeps its default:
    #   BIND                    "127.0.0.1:8025" (run_demo.py passes it explicitly)
    #   MAX_MESSAGE_SIZE        25 MiB
    #   MAX_RECIPIENTS          100
    #   COMMAND_TIMEOUT         300 seconds
    #   RECIPIENT_VALIDATORS    [".validators.reply_addresses.reply_address_validator",
    #                            ".validators.models.mailbox_validator"]
    #                           (signed reply addresses, when REPLY_ADDRESS_DOMAINS is set;
    #                           then the addresses listed as Mailbox rows in the admin)
    #   PLUS_DELIMITER          "+" (demo+anything@example.test reaches demo@example.test)
    #   STORAGE                 "default" (the STORAGES alias above)
    #   STORAGE_PREFIX          "inbound_smtp"
    #   DISPATCH                "auto": a Celery worker runs the receivers when
    #                           CELERY_BROKER_URL is set (see below), else smtpd's threads
    #   PROCESSING_CONCURRENCY  4 threads running the receivers (or sending Celery tasks)
    #   REDISPATCH_AFTER        300 seconds before the sweeper schedules a waiting message again
    #   SWEEP_INTERVAL          60 seconds between the sweeps smtpd runs by itself
    #   SHUTDOWN_GRACE          30 seconds
    #   SENDER_CHECKS           every check "tag": SPF, DKIM, DMARC, reverse DNS and the
    #                           sender's MX are checked and recorded, never refused
}
# The sender checks ask DNS. EXAMPLE_SENDER_CHECKS=off turns them off (the test suite
# does: its machine must not ask real DNS).
if os.environ.get("EXAMPLE_SENDER_CHECKS") == "off":
    INBOUND_SMTP["SENDER_CHECKS"] = dict.fromkeys(
        ("DNSBL", "IPREV", "SENDER_DOMAIN", "SPF", "DKIM", "DMARC"), "off"
    )

# Celery (example_project/celery.py reads every CELERY_* setting). Optional: without a
# broker URL, `make run` needs no broker and DISPATCH "auto" processes mail inline in
# smtpd. With one, e.g. CELERY_BROKER_URL=redis://127.0.0.1:6379/0 in the environment of
# smtpd, the worker and beat, smtpd hands each stored message to a worker instead.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL")
# Acknowledge a task after it ran, not when a worker takes it: a worker that dies
# mid-task leaves the task on the broker for another worker (the task is idempotent).
CELERY_TASK_ACKS_LATE = True
# ... and that includes a worker process killed by a signal or the OOM killer: the
# task is put back instead of being acknowledged as failed.
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# Each worker process reserves one task at a time: with late acks, prefetched tasks
# would wait behind a slow one instead of going to an idle worker.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Celery beat runs the sweeper every minute: it schedules again messages still waiting
# after REDISPATCH_AFTER (their task was lost, or the broker was down when they arrived),
# releases claims of workers that died, and retries failed messages with back-off.
# smtpd also sweeps every SWEEP_INTERVAL by itself; running both is harmless, since
# processing claims each message once.
CELERY_BEAT_SCHEDULE = {
    "inbound-smtp-sweep": {
        "task": "django_inbound_smtp.tasks.sweep",
        "schedule": 60.0,
    },
    # Retention (INBOUND_SMTP["RETENTION"] above), once a day.
    "inbound-smtp-prune": {
        "task": "django_inbound_smtp.tasks.prune",
        "schedule": 24 * 3600.0,
    },
}

# Show what the server and the demo receiver do on the console.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "console": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "console"},
    },
    "loggers": {
        "django_inbound_smtp": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "inbox": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}

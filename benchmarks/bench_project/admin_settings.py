"""The benchmark project with the admin: for ``seed_messages.py`` and ``admin_speed.py``.

The same database and storage settings as ``settings.py`` (environment variables there),
plus what the admin needs. ``DEBUG`` stays off: the benchmark counts queries with
``CaptureQueriesContext``, which records them regardless.
"""

import os
import tempfile

from bench_project.settings import *  # noqa: F403 - the benchmark project, extended

os.environ.setdefault(
    "BENCH_MEDIA_ROOT", os.path.join(tempfile.gettempdir(), "inbound_admin_bench")
)
STORAGES["default"]["OPTIONS"]["location"] = os.environ["BENCH_MEDIA_ROOT"]  # noqa: F405

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django_inbound_smtp",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "bench_project.admin_urls"
ALLOWED_HOSTS = ["testserver"]
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
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed only

"""Finding the project's Celery app from any thread."""

from __future__ import annotations

from celery import Celery, current_app
from celery import _state as celery_state
from django.utils.module_loading import import_string

from django_inbound_smtp.conf import get_settings
from django_inbound_smtp.exceptions import ConfigurationError

__all__ = ["celery_app"]


def celery_app() -> Celery:
    """The project's Celery app: ``CELERY_APP``, else the only one it created.

    Celery's ``current_app`` is per thread: in the threads that send our tasks it would
    be Celery's unconfigured fallback app (which sends to a default AMQP broker).
    """
    path = get_settings().CELERY_APP
    if path:
        app = import_string(path)
        if not isinstance(app, Celery):
            raise ConfigurationError(f"INBOUND_SMTP['CELERY_APP'] {path!r} is not a Celery app")
        return app
    # Celery has no public registry of apps; _get_active_apps() is the one it keeps.
    active = celery_state._get_active_apps()  # type: ignore[attr-defined]
    projects: list[Celery] = [app for app in active if app.main != "default"]
    if len(projects) == 1:
        return projects[0]
    if projects:
        raise ConfigurationError(
            "several Celery apps exist; set INBOUND_SMTP['CELERY_APP'] to the project's"
        )
    return current_app._get_current_object()  # type: ignore[attr-defined,no-any-return]

# Load the Celery app whenever Django starts, so that tasks sent from this project
# (django_inbound_smtp's processing) use its configuration.
from .celery import app as celery_app

__all__ = ("celery_app",)

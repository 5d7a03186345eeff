"""A Django app that is its own inbound SMTP server."""

__version__ = "0.1.0.dev0"

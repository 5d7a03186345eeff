"""Checking SMTP AUTH credentials with the project's Django authentication backends."""

from __future__ import annotations

from django.contrib.auth import authenticate

from django_inbound_smtp._db import unit_of_work

__all__ = ["authenticate_login"]


def authenticate_login(username: str, password: str) -> str | None:
    """The username if the credentials belong to an active user, else ``None``.

    Synchronous (password hashing is slow on purpose): the SMTP layer runs it in its
    ORM thread.
    """
    with unit_of_work():
        user = authenticate(username=username, password=password)
    if user is None or not user.is_active:
        return None
    return str(user.get_username())

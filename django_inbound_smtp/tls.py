"""Building the server's TLS context (shared by the listener and the system checks)."""

from __future__ import annotations

import ssl

from django_inbound_smtp.conf import get_settings

__all__ = ["CertificateStore", "server_context"]


def server_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """A server-side ``SSLContext`` for ``certfile`` (chain, PEM) and ``keyfile``.

    TLS 1.2 or newer. No client certificates are asked for: an MX must talk to any
    sender (RFC 3207 §4). Raises ``OSError`` / ``ssl.SSLError`` if the files are unusable.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_NONE
    context.load_cert_chain(certfile, keyfile)
    return context


class CertificateStore:
    """The listener's TLS context: built on first use, re-read on :meth:`reload`.

    Paths given here (``smtpd --tls-cert/--tls-key``) win over ``TLS_CERTFILE`` and
    ``TLS_KEYFILE``. :meth:`reload` loads the files again into the same context, so
    listeners created with it (implicit TLS) pick up a renewed certificate too.
    """

    def __init__(self, *, certfile: str | None = None, keyfile: str | None = None) -> None:
        self._override = (certfile, keyfile)
        self._paths: tuple[str, str] | None = None
        self._context: ssl.SSLContext | None = None

    def _configured(self) -> tuple[str, str] | None:
        settings = get_settings()
        certfile = self._override[0] or settings.TLS_CERTFILE
        keyfile = self._override[1] or settings.TLS_KEYFILE
        return (certfile, keyfile) if certfile and keyfile else None

    def context(self) -> ssl.SSLContext | None:
        """The context for the configured files, or ``None`` when TLS is not configured."""
        paths = self._configured()
        if paths is None:
            return None
        if self._context is None or paths != self._paths:
            self._context, self._paths = server_context(*paths), paths
        return self._context

    def reload(self) -> None:
        """Read the certificate and key files again (after a renewal)."""
        paths = self._configured()
        if paths is not None and self._context is not None and paths == self._paths:
            self._context.load_cert_chain(*paths)
        else:
            self._context = None

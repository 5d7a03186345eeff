"""Sender authentication: SPF, DKIM, DMARC, ARC, DNSBL, reverse DNS and sender MX.

Every lookup goes through one asynchronous resolver (:mod:`.resolver`), so nothing
here blocks the event loop. The evaluators (:mod:`.spf`, :mod:`.dmarc`,
:mod:`.network`) are pure: they take the resolver as an argument and import no
Django. :mod:`.dkim` runs its CPU work in a thread. :mod:`.results` holds the verdict
values and our ``Authentication-Results`` header (RFC 8601).
"""

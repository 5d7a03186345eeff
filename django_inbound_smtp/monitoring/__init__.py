"""Watching a running server: queue state, health checks, the metrics listener.

- :mod:`.status`: the queue's state from the database (``manage.py inbound_status``
  and the queue gauges);
- :mod:`.readiness`: the blocking readiness checks (database, storage, disk space);
- :mod:`.collector`: Prometheus gauges over a cached queue state;
- :mod:`.http`: a tiny HTTP/1.0 responder on the asyncio loop;
- :mod:`.service`: ``/metrics``, ``/healthz`` and ``/readyz`` served by ``smtpd``.
"""

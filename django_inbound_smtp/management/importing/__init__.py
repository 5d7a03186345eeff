"""``manage.py inbound_import``: messages from a pipe, an mbox file or a Maildir folder,
through the same recipient validators, limits, store (dedupe included) and processing
as a message received over SMTP.

``reading`` turns each source into messages (byte chunks, streamed: never a whole
mailbox in memory); ``intake`` validates, spools and stores them in batches and
schedules their processing after each commit; ``progress`` reports.
"""

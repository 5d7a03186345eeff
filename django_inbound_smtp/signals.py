"""Signals: notifications sent after a message is committed. Receivers cannot change
the SMTP outcome. Declarations only; nothing here is connected.
"""

from __future__ import annotations

from django.dispatch import Signal

__all__ = ["message_bounced", "message_received"]

# Sent once per stored message, by the processing step, after the transaction that
# stored it has committed and (in the smtpd process) off the event loop, so the 250
# has already been decided. It is sent with ``send_robust``: a receiver that raises
# is logged with its traceback, the message is marked ``failed`` with it, and other
# receivers still run.
#
#   sender      InboundMessage (the model class)
#   message     InboundMessage: the committed row, parsed (``text``, ``html``,
#               ``reply_text`` and ``reply_html``, the new text of a reply, are set);
#               ``message.raw_bytes`` reads the exact bytes received, our Received:
#               line first
#   recipients  list[InboundRecipient]: every accepted envelope recipient, in RCPT
#               order, BCC recipients included. A signed reply address carries
#               ``reply_object`` (the model instance its token names, ``None`` if it
#               was deleted since), ``reply_trust`` (a ``ReplyTrust`` value: may
#               this reply act as the user it was issued to?); a signed return path
#               carries ``bounce_recipient`` (see ``reply_addresses``)
#   mailboxes   list[Mailbox]: the distinct Mailbox rows those recipients matched
#   envelope    django_inbound_smtp.envelope.ReceivedEnvelope, rebuilt from the row
#
# Receivers must accept ``**kwargs``: new keyword arguments may be added.
#: Sent after an accepted message is durably stored.
message_received = Signal()

# Sent once per bounce (a message of kind ``bounce``: a delivery status notification
# or a known non-standard bounce), by the processing step, right after
# ``message_received`` for the same message and under the same contract: after the
# commit, off the event loop, with ``send_robust`` (a receiver that raises is logged
# and marks the message ``failed``; never an SMTP error). Again after a retry.
#
#   sender               InboundMessage (the model class)
#   message              InboundMessage: the bounce itself (``message.kind == "bounce"``)
#   recipients           list[BounceRecipient]: every recipient the report names, in
#                        its order (empty when a non-standard bounce could not be read)
#   failed               list[str]: the addresses of the rows whose action is
#                        ``failed`` (the original recipient when reported, else the
#                        final one): mail to them will never arrive
#   original_message_id  str: Message-ID of the mail that bounced, "" if not quoted
#   return_path_recipients  list[str]: when the bounce came to signed return paths
#                        (VERP, ``reply_addresses.return_path``), the addresses they
#                        were made for: who the bounced mail went to, by our own
#                        signature (the report may name a forwarding address)
#
# Receivers must accept ``**kwargs``: new keyword arguments may be added.
#: Sent after a bounce is parsed, naming the recipients that failed.
message_bounced = Signal()

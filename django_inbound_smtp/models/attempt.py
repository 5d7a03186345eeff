"""The processing history of a message: one row per attempt, never overwritten."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

from django_inbound_smtp.models.message import InboundMessage

__all__ = ["ProcessingAttempt"]


class ProcessingAttempt(models.Model):
    """One attempt at processing a message: who ran it, when, and how it ended.

    Written by the processing step together with the outcome on the message (one
    insert per batch, in the same transaction), so the history and the message's
    ``status`` always agree. A reprocess adds rows; none is ever changed. An attempt
    whose worker died records nothing: the gap in ``number`` shows it.
    """

    class Outcome(models.TextChoices):
        # The values of ``lifecycle.process.Outcome`` that end an attempt.
        PROCESSED = "processed", _("processed")
        FAILED = "failed", _("failed")
        LOST = "lost", _("lost (its lease was taken over)")

    message = models.ForeignKey(
        InboundMessage,
        on_delete=models.CASCADE,
        related_name="processing_attempts",
        verbose_name=_("message"),
        db_index=False,  # the (message, number) index below serves it
    )
    number = models.PositiveIntegerField(
        _("attempt"), help_text=_("The message's attempt count when this attempt claimed it.")
    )
    started_at = models.DateTimeField(_("started"), help_text=_("When the attempt claimed it."))
    finished_at = models.DateTimeField(_("finished"))
    worker = models.CharField(
        _("worker"),
        max_length=200,
        blank=True,
        help_text=_(
            "Who ran it: the claim of an inline thread (inline:<host>:<pid>:<start>:...), "
            "a Celery worker and task (celery:<worker>:<task id>:...) or a task worker."
        ),
    )
    outcome = models.CharField(_("outcome"), max_length=16, choices=Outcome.choices)
    error = models.TextField(
        _("error"), blank=True, help_text=_("Tracebacks of the receivers that failed.")
    )

    class Meta:
        verbose_name = _("processing attempt")
        verbose_name_plural = _("processing attempts")
        ordering = ("-number", "-pk")  # newest first
        indexes = [
            models.Index(fields=["message", "number"], name="inbound_smtp_attempt_msg_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.message_id} #{self.number}: {self.outcome}"

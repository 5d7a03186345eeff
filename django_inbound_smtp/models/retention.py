"""Files whose rows retention has deleted, until the files are gone too."""

from __future__ import annotations

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

__all__ = ["PendingFileDeletion"]


class PendingFileDeletion(models.Model):
    """A stored file (raw message or attachment) to delete: written in the transaction
    that deletes its message's row, removed once the file is deleted after the commit.

    So a crash between the commit and the file deletion leaves a note, and the next
    prune finishes the job. The orphan sweeper alone would not: it looks only at the
    last days' folders, and pruned files are old."""

    name = models.CharField(
        _("file name"), max_length=255, help_text=_("Name in the INBOUND_SMTP['STORAGE'] storage.")
    )
    created_at = models.DateTimeField(_("created"), default=timezone.now)

    class Meta:
        verbose_name = _("file pending deletion")
        verbose_name_plural = _("files pending deletion")

    def __str__(self) -> str:
        return self.name

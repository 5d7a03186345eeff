"""Downloads of received bytes: always an attachment, never rendered."""

from __future__ import annotations

from typing import Any

from django.http import FileResponse


def download(handle: Any, *, filename: str, content_type: str) -> FileResponse:
    # A download, never rendered: the bytes are the sender's (hostile-inputs #80-#81).
    response = FileResponse(
        handle, as_attachment=True, filename=filename, content_type=content_type
    )
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "sandbox"
    return response

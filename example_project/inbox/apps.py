"""The demo app: shows what a project does with the mail the server stores."""

from django.apps import AppConfig


class InboxConfig(AppConfig):
    name = "inbox"
    verbose_name = "Demo inbox"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Importing the module connects its receivers (the usual Django idiom).
        from inbox import receivers  # noqa: F401

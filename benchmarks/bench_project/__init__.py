"""The Django project ``manage.py smtpd`` runs in the benchmark (settings from the environment)."""

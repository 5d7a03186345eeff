"""pytest in ``example_project/``: its tests need the example project's settings.

``tests/test_example_inbox.py`` runs ``inbox/tests.py`` with
``--ds=example_project.settings``. Collected under any other settings (say
``pytest .`` from the repository root, which uses ``tests.settings``), the ``inbox``
models would not import; those tests are left out instead.
"""

from django.conf import settings

collect_ignore_glob = [] if "inbox" in settings.INSTALLED_APPS else ["inbox/*"]

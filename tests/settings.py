"""Settings for the test run: the real settings, isolated from a local dev run.

``CHAT_TEST_ID`` (default ``chat_test``) names the test database, the Celery
queue and the Redis channel prefix, so two test runs (or a test run beside a
local ``run``) on one machine do not share rows, tasks or events.
"""

import os

os.environ.setdefault("DJANGO_DEBUG", "true")
from chatsite.settings import *  # noqa: E402,F403
from chatsite.settings import CACHES, DATABASES  # noqa: E402

TEST_ID = os.environ.get("CHAT_TEST_ID", "chat_test")
# pytest-xdist runs the suite in several worker processes (scripts/test.sh): each
# one is a test run of its own, with its own database, queue and prefix.
if os.environ.get("PYTEST_XDIST_WORKER"):
    TEST_ID = f"{TEST_ID}_{os.environ['PYTEST_XDIST_WORKER']}"
DATABASES["default"]["TEST"] = {"NAME": f"test_{TEST_ID}"}
CELERY_TASK_DEFAULT_QUEUE = f"{TEST_ID}-tasks"
CHAT_REDIS_PREFIX = f"{TEST_ID}-events"
# Throttling counters (django-ratelimit's cache, messages_app.limits) of this run only.
CACHES["default"]["KEY_PREFIX"] = f"{CHAT_REDIS_PREFIX}:cache"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

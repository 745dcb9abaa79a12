"""Settings for the chat site, every value read from the environment.

The defaults are those of a local run on a developer machine (Postgres and Redis
on 127.0.0.1). ``docker-compose.yml`` and ``.env.example`` set the same names.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from chatsite.env import (
    MAKE_A_SECRET_KEY,
    check_at_most,
    check_production_secret_key,
    check_redis_url,
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_networks,
    env_str,
    parse_database_url,
)

BASE_DIR = Path(__file__).resolve().parent.parent

# DJANGO_ENV=production turns the safety checks into refusals to start:
# no DEBUG, a real secret key. Development (the default) runs with DEBUG on.
DJANGO_ENV = env_choice("DJANGO_ENV", "development", ("development", "production"))
PRODUCTION = DJANGO_ENV == "production"
DEBUG = env_bool("DJANGO_DEBUG", not PRODUCTION)
if PRODUCTION and DEBUG:
    raise ImproperlyConfigured(
        "DJANGO_DEBUG must be off when DJANGO_ENV=production: debug pages leak settings and code."
    )
_DEV_SECRET_KEY = "django-insecure-local-development-key-do-not-use-in-production"  # noqa: S105
# docker-compose.yml's default key: public, so production refuses it (test_security.py
# checks that the compose file still says exactly this).
COMPOSE_PLACEHOLDER_SECRET_KEY = "django-insecure-compose-default-set-DJANGO_SECRET_KEY-in-dot-env"  # noqa: S105
SECRET_KEY = env_str("DJANGO_SECRET_KEY", "")
if PRODUCTION:
    check_production_secret_key(
        SECRET_KEY, public=(_DEV_SECRET_KEY, COMPOSE_PLACEHOLDER_SECRET_KEY)
    )
if not SECRET_KEY or SECRET_KEY == _DEV_SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY must be set (to a long random value) when DJANGO_DEBUG is off. "
            f"Make one with: {MAKE_A_SECRET_KEY}"
        )
    SECRET_KEY = _DEV_SECRET_KEY
if not DEBUG and len(SECRET_KEY) < 32:
    raise ImproperlyConfigured(
        f"DJANGO_SECRET_KEY is too short: use 32 characters or more. Make one with: "
        f"{MAKE_A_SECRET_KEY}"
    )

# Behind HTTPS (a TLS-terminating proxy that sets X-Forwarded-Proto): cookies only
# over HTTPS, HSTS, and plain HTTP redirected.
HTTPS = env_bool("DJANGO_HTTPS", False)
if HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = False
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    # Failed logins per address and per username (login page and admin): AXES_* below.
    "axes",
    "messages_app",
]

MIDDLEWARE = [
    # First: Docker's probe of GET /healthz (chatsite/health.py) must not meet the
    # host check or the HTTPS redirect.
    "chatsite.health.HealthCheckMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files, served by the web process itself (daphne has no static
    # handler): from STATIC_ROOT as collected into the image, or, with DEBUG,
    # straight from the apps' static/ folders without collectstatic.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "chatsite.middleware.ContentSecurityPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "chatsite.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]
WSGI_APPLICATION = None
ASGI_APPLICATION = "chatsite.asgi.application"

DATABASES = {
    "default": parse_database_url(
        env_str("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/chat")
    )
}
# Short transactions from many threads (a worker streams up to a hundred replies
# at once, each flush its own UPDATE): a pool per process (psycopg_pool, Django's
# "pool" option) shares a few connections among them, since Postgres allows only
# so many (max_connections, 100 by default, for every process and deployment).
# A streaming run gives its connection back after each flush (worker/streaming.py).
# Connections are checked before reuse so a restarted Postgres heals.
# DATABASE_POOL_MAX_SIZE=0 turns the pool off: one persistent connection per
# thread instead (DATABASE_CONN_MAX_AGE seconds).
DATABASE_POOL_MAX_SIZE = env_int("DATABASE_POOL_MAX_SIZE", 10, minimum=0, maximum=1000)
if DATABASE_POOL_MAX_SIZE:
    DATABASES["default"]["OPTIONS"]["pool"] = {
        "min_size": 1,
        "max_size": DATABASE_POOL_MAX_SIZE,
        "timeout": env_float("DATABASE_POOL_TIMEOUT", 30.0, minimum=0.1),
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # the pool keeps them; Django requires 0
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

AUTH_USER_MODEL = "messages_app.User"
# django-axes first: it refuses a locked-out address or username before the
# password is even checked (so a correct password during a lockout fails too).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("DJANGO_STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Without DEBUG: hashed, compressed files with far-future cache headers, which
    # need `manage.py collectstatic` first (the Docker image runs it at build, the
    # run script at start). With DEBUG: plain names, found in the apps as edited.
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: Celery broker and room events -------------------------------------
REDIS_URL = check_redis_url(env_str("REDIS_URL", "redis://127.0.0.1:6379/0"))
# Room events do not use a Channels layer: each change is one PUBLISH on the
# room's channel, and each web process keeps one subscription per room and fans
# out to its sockets in memory (messages_app/realtime/; docs/benchmarks.md says
# why). This prefix names those channels and the workers' cancel channel, so two
# deployments (or test runs) can share one Redis.
CHAT_REDIS_PREFIX = env_str("CHAT_REDIS_PREFIX", "chat")
# Where room events and socket commands travel: REDIS_URL unless set (any URL
# redis-py accepts). With CHAT_EVENTS_REDIS_CLUSTER it names one node of a Redis
# Cluster, and events use sharded pub/sub (SPUBLISH/SSUBSCRIBE, one shard per
# room channel); Celery and the cancel channel stay on REDIS_URL.
CHAT_EVENTS_REDIS_URL = check_redis_url(
    env_str("CHAT_EVENTS_REDIS_URL", REDIS_URL), name="CHAT_EVENTS_REDIS_URL"
)
CHAT_EVENTS_REDIS_CLUSTER = env_bool("CHAT_EVENTS_REDIS_CLUSTER", False)
# The subscriber PINGs Redis after this many quiet seconds; a connection silent
# for twice as long is dead, and the hub reconnects and repairs.
CHAT_REDIS_HEALTH_CHECK_SECONDS = env_float(
    "CHAT_REDIS_HEALTH_CHECK_SECONDS", 2.0, minimum=0.1, maximum=60.0
)
# Every this many seconds each socket gets the versions of its room's open rows
# (a heartbeat frame): a page that missed an event resyncs (docs/architecture.md).
CHAT_RECONCILE_SECONDS = env_float("CHAT_RECONCILE_SECONDS", 2.0, minimum=0.1, maximum=300.0)
# Presence (messages_app/realtime/presence.py): each web process renews its open
# sockets' entries in Redis on that tick; the entries of a process that died
# expire after this many seconds (so it must outlast two ticks).
CHAT_PRESENCE_TTL_SECONDS = env_float(
    "CHAT_PRESENCE_TTL_SECONDS", 30.0, minimum=1.0, maximum=3600.0
)
check_at_most(
    "CHAT_RECONCILE_SECONDS",
    CHAT_RECONCILE_SECONDS,
    "CHAT_PRESENCE_TTL_SECONDS / 2",
    CHAT_PRESENCE_TTL_SECONDS / 2,
)
# A presence frame lists at most this many users (its count says how many are in).
CHAT_PRESENCE_MAX_USERS = env_int("CHAT_PRESENCE_MAX_USERS", 50, minimum=1, maximum=1000)
# Each web process publishes a room's presence list at most once per this many
# seconds (joins and leaves within it go out together at its end), so many sockets
# joining at once cost one frame per socket per window, not the square of their
# number. 0 publishes every change at once.
CHAT_PRESENCE_COALESCE_SECONDS = env_float(
    "CHAT_PRESENCE_COALESCE_SECONDS", 1.0, minimum=0.0, maximum=60.0
)
# "Alice is typing": one typing frame per user and room per this many seconds
# (room.js sends no faster; the server drops a faster one silently).
CHAT_TYPING_INTERVAL_SECONDS = env_float(
    "CHAT_TYPING_INTERVAL_SECONDS", 3.0, minimum=0.5, maximum=60.0
)
# The most bytes queued for one socket that does not read; over it the socket is
# closed with 4408 ("too slow") and the page reconnects from a snapshot.
CHAT_SOCKET_BUFFER_BYTES = env_int(
    "CHAT_SOCKET_BUFFER_BYTES", 1024 * 1024, minimum=4096, maximum=256 * 1024 * 1024
)
# Under daphne, write frames straight to the sockets (messages_app/realtime/daphne.py);
# it turns itself off at start-up, with a warning, when daphne's internals changed.
CHAT_DAPHNE_FAST_PATH = env_bool("CHAT_DAPHNE_FAST_PATH", True)

# Django's cache, on the same Redis: django-ratelimit keeps its signup counters
# here (so every web process shares them). Keys carry the deployment's prefix.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": f"{CHAT_REDIS_PREFIX}:cache",
    }
}

# --- Throttling and limits (docs/architecture.md, "Limits") --------------------
# The client's address: REMOTE_ADDR, unless the peer is one of these proxies
# (addresses or CIDR networks); then X-Forwarded-For's right-most untrusted hop
# (chatsite/client_ip.py). docker-compose's nginx is such a proxy.
CHAT_TRUSTED_PROXIES = env_networks("CHAT_TRUSTED_PROXIES", [])
# Or, where the proxies' addresses are not known in advance (containers): every
# request passes through exactly this many proxies of ours, and the client is
# X-Forwarded-For's N-th address from the right (docker-compose.yml: 1, nginx).
CHAT_TRUSTED_PROXY_COUNT = env_int("CHAT_TRUSTED_PROXY_COUNT", 0, minimum=0, maximum=10)
if CHAT_TRUSTED_PROXIES and CHAT_TRUSTED_PROXY_COUNT:
    raise ImproperlyConfigured(
        "Set CHAT_TRUSTED_PROXIES or CHAT_TRUSTED_PROXY_COUNT, not both: they are two ways "
        "of saying which X-Forwarded-For address is the client's."
    )
# Logins (the login page and the admin's): after this many failures in a row
# from one address, or for one username, both are refused for the lockout time,
# even with the right password. A success resets the count.
CHAT_LOGIN_FAILURE_LIMIT = env_int("CHAT_LOGIN_FAILURE_LIMIT", 5, minimum=1, maximum=1000)
CHAT_LOGIN_LOCKOUT_SECONDS = env_int(
    "CHAT_LOGIN_LOCKOUT_SECONDS", 900, minimum=1, maximum=30 * 24 * 3600
)
AXES_FAILURE_LIMIT = CHAT_LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(seconds=CHAT_LOGIN_LOCKOUT_SECONDS)
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]  # each on its own, not the pair
AXES_RESET_ON_SUCCESS = True
# Failures are what a lockout needs; a row per successful login would only grow.
AXES_DISABLE_ACCESS_LOG = True
AXES_CLIENT_IP_CALLABLE = "chatsite.client_ip.client_ip"
AXES_LOCKOUT_CALLABLE = "messages_app.views.login_locked_out"
AXES_HTTP_RESPONSE_CODE = 429
# Accounts one address may create per hour (django-ratelimit on the cache above).
CHAT_SIGNUPS_PER_HOUR = env_int("CHAT_SIGNUPS_PER_HOUR", 5, minimum=1, maximum=100000)
RATELIMIT_USE_CACHE = "default"
# Per user, on Redis with the `limits` library's moving window (messages_app/limits.py):
# posts, a burst and a sustained rate (every post counts, @gpt or not) ...
CHAT_POST_BURST = env_int("CHAT_POST_BURST", 10, minimum=1, maximum=100000)
CHAT_POST_BURST_SECONDS = env_int("CHAT_POST_BURST_SECONDS", 10, minimum=1, maximum=3600)
CHAT_POSTS_PER_MINUTE = env_int("CHAT_POSTS_PER_MINUTE", 60, minimum=1, maximum=100000)
# ... rooms created per hour ...
CHAT_ROOMS_PER_HOUR = env_int("CHAT_ROOMS_PER_HOUR", 10, minimum=1, maximum=100000)
# ... and sockets open at once, across every web process: each open socket holds
# a lease in Redis that it renews every third of this many seconds, so the
# sockets of a web process that died stop counting after at most this long.
CHAT_MAX_SOCKETS_PER_USER = env_int("CHAT_MAX_SOCKETS_PER_USER", 20, minimum=1, maximum=10000)
CHAT_SOCKET_LEASE_SECONDS = env_int("CHAT_SOCKET_LEASE_SECONDS", 60, minimum=3, maximum=3600)

# --- Celery: long, I/O-bound streaming tasks -----------------------------------
# The worker's pool and concurrency live here, not on command lines: a plain
# `celery -A chatsite worker` (Celery's documented way to start one) otherwise
# runs the prefork pool with one process per core, which streams only as many
# replies as there are cores. A reply spends its life waiting on the model's
# socket, so one process of threads holds many streams (WORKER_CONCURRENCY).
# How the settings below fit together:
# - acks early (acks_late off): a task is acknowledged when a thread starts it.
#   Late acks would redeliver the task of a worker that died mid-stream, but that
#   task could only find its row already streaming and exit; the watchdog (beat,
#   below) is what ends such a row, as failed "interrupted" with its partial
#   text, from its heartbeat. A task lost between its ack and its claim (the
#   worker killed in that instant) leaves its row pending: the watchdog fails it
#   after GPT_QUEUE_TIMEOUT with a reason that says so (tests/integration/
#   test_worker_faults.py kills a worker at that moment). In the threads pool
#   the ack is only scheduled on the consumer's loop when the task starts, so
#   such a task may also come back after the visibility timeout: it then finds
#   its row closed and writes nothing. Late acks also cost a
#   real failure: with a reply in flight, a lost Redis connection makes kombu
#   restore unacked messages through a closed connection and the worker dies
#   ("Unrecoverable error: AttributeError ... 'hostname'", seen in
#   tests/integration/test_failures.py). A task delivered twice all the same is
#   harmless: the claim lets one attempt write the row.
# - prefetch multiplier 1: a worker reserves at most WORKER_CONCURRENCY tasks
#   beyond the ones running (the threads pool counts its threads), so a queued
#   reply waits behind a busy worker no longer than needed while another idles;
#   reserved tasks of a worker stopped warmly go back to the queue.
# - visibility_timeout (Redis transport; it takes effect as a broker transport
#   option): a reserved but unacknowledged task is handed out again after this
#   long. It exceeds the longest reply, so no running reply is handed out twice
#   (and a second delivery would only find its row claimed).
# - time limits: Celery enforces them only in the prefork pool, not in threads;
#   the streaming run enforces GPT_REPLY_TIME_LIMIT itself (worker/streaming.py).
# - a lost broker connection must not cancel running streams: they write to
#   Postgres and finish on their own.
CELERY_BROKER_URL = REDIS_URL
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_TASK_QUEUE", "chat")
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_POOL = "threads"
CELERY_WORKER_CONCURRENCY = env_int("WORKER_CONCURRENCY", 50, minimum=1, maximum=1000)
CELERY_TASK_ACKS_LATE = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False

# --- The assistant ----------------------------------------------------------
GRANULARITIES = ("token", "word", "sentence")
GPT_STREAM_GRANULARITY = env_choice("GPT_STREAM_GRANULARITY", "word", GRANULARITIES)
OPENAI_API_KEY = env_str("OPENAI_API_KEY", "")
OPENAI_BASE_URL = env_str("OPENAI_BASE_URL", "")
OPENAI_MODEL = env_str("OPENAI_MODEL", "gpt-4o-mini")
# Seconds without a byte from the model before the stream counts as stalled.
GPT_TOKEN_TIMEOUT = env_float("GPT_TOKEN_TIMEOUT", 30.0, minimum=0.1)
# Retries of the request (429, 5xx, connection errors) before the first token.
GPT_MAX_RETRIES = env_int("GPT_MAX_RETRIES", 3, minimum=0, maximum=10)
# First backoff in seconds between those retries; it doubles each time (with jitter).
GPT_RETRY_BACKOFF = env_float("GPT_RETRY_BACKOFF", 0.5, minimum=0.0)
# The longest a reply may stream before it is stopped and marked failed.
GPT_REPLY_TIME_LIMIT = env_float("GPT_REPLY_TIME_LIMIT", 600.0, minimum=1.0)
# The watchdog (beat, every GPT_WATCHDOG_INTERVAL seconds) marks failed
# ("interrupted") a streaming reply whose heartbeat is older than GPT_STALE_AFTER;
# the run writes one every GPT_HEARTBEAT_INTERVAL seconds whatever it is doing, so
# the limit must leave room for a few missed beats. A pending reply is failed only
# after GPT_QUEUE_TIMEOUT seconds in the queue (no worker started it), never
# because every thread is busy for a while.
GPT_STALE_AFTER = env_float("GPT_STALE_AFTER", 120.0, minimum=0.5)
GPT_WATCHDOG_INTERVAL = env_float("GPT_WATCHDOG_INTERVAL", 30.0, minimum=0.1)
GPT_HEARTBEAT_INTERVAL = env_float("GPT_HEARTBEAT_INTERVAL", 10.0, minimum=0.05)
check_at_most(
    "GPT_HEARTBEAT_INTERVAL", GPT_HEARTBEAT_INTERVAL, "GPT_STALE_AFTER / 2", GPT_STALE_AFTER / 2
)
GPT_QUEUE_TIMEOUT = env_float("GPT_QUEUE_TIMEOUT", 900.0, minimum=1.0)
# The longest reply: tokens the model may write (max_tokens of every request),
# and characters stored (a reply cut by either ends failed, saying which limit).
GPT_MAX_REPLY_TOKENS = env_int("GPT_MAX_REPLY_TOKENS", 4000, minimum=1, maximum=128000)
GPT_MAX_REPLY_CHARS = env_int("GPT_MAX_REPLY_CHARS", 16000, minimum=100, maximum=1000000)
# A streaming reply's text goes into chunk rows, folded into its body every this
# many characters and when it ends (messages_app/models.py, ReplyChunk): the
# body is rewritten once per fold instead of once per write.
GPT_FOLD_CHARS = env_int("GPT_FOLD_CHARS", 4096, minimum=64, maximum=1000000)
# Seconds a streaming run retries a write that meets a transient database error
# (connection lost, Postgres restarting) before it gives the reply up as failed;
# the model's stream goes on meanwhile and its text is kept (worker/dbretry.py).
GPT_DB_RETRY_FOR = env_float("GPT_DB_RETRY_FOR", 30.0, minimum=0.0)
# Per user: @gpt replies open at once, and started in any 60 seconds.
GPT_MAX_OPEN_REPLIES_PER_USER = env_int("GPT_MAX_OPEN_REPLIES_PER_USER", 3, minimum=1)
GPT_MAX_REPLIES_PER_MINUTE = env_int("GPT_MAX_REPLIES_PER_MINUTE", 10, minimum=1)
# Per user: tokens (total_tokens the model reported) of the replies asked for in
# the last 24 hours; a new @gpt request beyond it is refused. 0: no budget.
GPT_DAILY_TOKENS_PER_USER = env_int("GPT_DAILY_TOKENS_PER_USER", 0, minimum=0)
# Earlier attempts kept per reply when it is regenerated (ReplyRevision rows); a
# regenerate that would keep more is refused (too_many_revisions), so no text is
# dropped silently and every attempt's tokens stay counted.
GPT_MAX_REVISIONS = env_int("GPT_MAX_REVISIONS", 10, minimum=1, maximum=100)
GPT_CONTEXT_MESSAGES = env_int("GPT_CONTEXT_MESSAGES", 30, minimum=1, maximum=500)
GPT_CONTEXT_CHARS = env_int("GPT_CONTEXT_CHARS", 24000, minimum=500)
# A message that mentions several assistants gets a reply from each of the first
# this many active ones it mentions (issue 13); the other handles are ignored.
GPT_MAX_ASSISTANTS_PER_MESSAGE = env_int("GPT_MAX_ASSISTANTS_PER_MESSAGE", 3, minimum=1, maximum=10)
# A room's own instructions for its assistants, set by its owners and moderators:
# at most this many characters; and the most recent messages a room may let the
# model see (its "context" setting; blank uses GPT_CONTEXT_MESSAGES).
CHAT_ROOM_INSTRUCTIONS_MAX_CHARS = env_int(
    "CHAT_ROOM_INSTRUCTIONS_MAX_CHARS", 2000, minimum=0, maximum=20000
)
CHAT_ROOM_CONTEXT_MESSAGES_MAX = env_int(
    "CHAT_ROOM_CONTEXT_MESSAGES_MAX", 100, minimum=1, maximum=500
)

# --- Chat -------------------------------------------------------------------
CHAT_SNAPSHOT_SIZE = env_int("CHAT_SNAPSHOT_SIZE", 50, minimum=1, maximum=1000)
# A "history" frame (scrolling back, a link to one message) asks for at most this
# many messages; a larger limit is refused (invalid_limit). Each user may ask this
# many pages a minute, across every socket (a page scrolling fast cannot flood).
CHAT_HISTORY_MAX_LIMIT = env_int("CHAT_HISTORY_MAX_LIMIT", 100, minimum=1, maximum=1000)
CHAT_HISTORY_PER_MINUTE = env_int("CHAT_HISTORY_PER_MINUTE", 60, minimum=1, maximum=100000)
# Edits of one's own messages a user may make in any 60 seconds.
CHAT_EDITS_PER_MINUTE = env_int("CHAT_EDITS_PER_MINUTE", 30, minimum=1, maximum=100000)
# A room's export (Markdown or JSON) streams its messages this many at a time, so
# a large room never sits in a web process's memory whole (messages_app/export.py).
CHAT_EXPORT_PAGE_SIZE = env_int("CHAT_EXPORT_PAGE_SIZE", 500, minimum=1, maximum=10000)
CHAT_MAX_BODY_LENGTH = env_int("CHAT_MAX_BODY_LENGTH", 4000, minimum=1, maximum=100000)

# Rooms and accounts (issue 9). Who may sign up: "open" (anyone who reaches the
# site), "invite" (only while holding a valid room invite link; staff can still
# make accounts in the admin), "closed" (no signup page). Production defaults
# to "invite": a site bound to a network must not let strangers spend the API key.
SIGNUP_MODES = ("open", "invite", "closed")
CHAT_SIGNUP = env_choice("CHAT_SIGNUP", "invite" if PRODUCTION else "open", SIGNUP_MODES)
# Hours an invite link works after it is made; 0 = until it is replaced. At most a year.
CHAT_INVITE_HOURS = env_int("CHAT_INVITE_HOURS", 168, minimum=0, maximum=8760)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO").upper()},
    "loggers": {"django.channels.server": {"level": "WARNING"}},
}
# With neither OPENAI_API_KEY nor OPENAI_BASE_URL, replies come from the
# project's demo model server (python -m worker.demo_llm), labelled "demo".
GPT_DEMO_BASE_URL = env_str("GPT_DEMO_BASE_URL", "http://127.0.0.1:8001/v1")

CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": int(GPT_REPLY_TIME_LIMIT * 2 + 60)}
CELERY_BEAT_SCHEDULE = {
    "fail-stale-replies": {
        "task": "worker.tasks.fail_stale_replies",
        "schedule": GPT_WATCHDOG_INTERVAL,
    },
}

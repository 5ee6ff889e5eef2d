"""Settings for bklog, read from environment variables only (12-factor).

Every variable read here is listed, with its default, in the README's configuration table.
Defaults are chosen so that `make run` works on one machine with no configuration at all.
"""

import os
import sys
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("BKLOG_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()


def _gevent_patched() -> bool:
    """True in a Gunicorn gevent worker (it monkey-patches the standard library before loading us)."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched("socket")


VERSION = "0.1.0"

# --- Django core -------------------------------------------------------------------------

SECRET_KEY = env.str("SECRET_KEY", default="dev-only-insecure-secret-key-change-me")
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["*"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "bklog_app",
    "bklog_app.plugins",
    "bklog_app.persons",
    "bklog_app.exports",
    "bklog_app.privacy",
    "bklog_app.governance",
]

MIDDLEWARE = [
    "bklog_app.request_context.RequestContextMiddleware",
    "bklog_app.request_metrics.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # /static/ from STATIC_ROOT (capture requests never reach Django: bklog_app/capture/fastpath.py).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "bklog_app.urls"
WSGI_APPLICATION = "bklog_app.wsgi.application"

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

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'bklog.sqlite3'}"),
}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
# A kept connection is checked (SELECT 1) before the first query of each task or request, and
# replaced if the server went away meanwhile (PostgreSQL restarted, a failover).
DATABASES["default"]["CONN_HEALTH_CHECKS"] = env.bool("DATABASE_CONN_HEALTH_CHECKS", default=True)
if _gevent_patched():
    # Under Gunicorn's gevent worker each request runs in a greenlet of its own, and Django
    # keeps a connection per greenlet: kept open, they would pile up until PostgreSQL refuses more.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Worker processes and the web tier share one SQLite file: wait for locks instead of
    # failing at once, and let readers run beside a writer.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-bklog.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# Static files (the admin's, the browsable API's) are served by WhiteNoise from STATIC_ROOT, which
# `manage.py collectstatic` fills: run-supervisord.sh before it starts the stack, the image at build
# time (STATIC_ROOT=/app/staticfiles there). Names carry a content hash, so they are cached for a year.
STATIC_URL = "static/"
STATIC_ROOT = env.str("STATIC_ROOT", default=str(VAR_DIR / "static"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="bklog@localhost")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "bklog_app.api.authentication.PersonalAPIKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "EXCEPTION_HANDLER": "bklog_app.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # JSON bodies only (a view that takes files names its own parsers).
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
}

SPECTACULAR_SETTINGS = {
    "TITLE": "bklog API",
    "DESCRIPTION": "Projects, plugins, persons, events, exports and dead letters. Authenticate with "
    "`Authorization: Bearer <personal API key>`.",
    "VERSION": VERSION,
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "bklog_app.api.schema.add_error_responses",
    ],
}

# --- Stores ------------------------------------------------------------------------------

REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
# With Sentinel, REDIS_URL (and CELERY_BROKER_URL) list the Sentinels,
# "sentinel://host:port;sentinel://host:port/0", and this names the master they watch.
REDIS_SENTINEL_MASTER = env.str("REDIS_SENTINEL_MASTER", default="bklog")
# Capture answers 200 only once its message is on this many Redis replicas too (WAIT), or
# 503 after REDIS_WAIT_TIMEOUT_MS: a master failover then loses no accepted event. 0: no wait.
REDIS_WAIT_REPLICAS = env.int("REDIS_WAIT_REPLICAS", default=0)
REDIS_WAIT_TIMEOUT_MS = env.int("REDIS_WAIT_TIMEOUT_MS", default=500)

CLICKHOUSE_HOST = env.str("CLICKHOUSE_HOST", default="127.0.0.1")
CLICKHOUSE_PORT = env.int("CLICKHOUSE_PORT", default=9000)
CLICKHOUSE_DATABASE = env.str("CLICKHOUSE_DATABASE", default="bklog")
CLICKHOUSE_USER = env.str("CLICKHOUSE_USER", default="default")
CLICKHOUSE_PASSWORD = env.str("CLICKHOUSE_PASSWORD", default="")
CLICKHOUSE_SECURE = env.bool("CLICKHOUSE_SECURE", default=False)
CLICKHOUSE_CA = env.str("CLICKHOUSE_CA", default="")
CLICKHOUSE_TIMEOUT_SECONDS = env.float("CLICKHOUSE_TIMEOUT_SECONDS", default=10.0)
# A cluster named in the servers' `remote_servers`: events then live in a replicated local table
# on every node (`events_local`) behind a Distributed table (`events`). Empty: one server.
CLICKHOUSE_CLUSTER = env.str("CLICKHOUSE_CLUSTER", default="")
# More servers to try, in order, when CLICKHOUSE_HOST does not answer: "host:port,host:port".
CLICKHOUSE_ALT_HOSTS = env.str("CLICKHOUSE_ALT_HOSTS", default="")

# --- Celery ------------------------------------------------------------------------------

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
# A killed worker's unacknowledged messages come back once they are this many seconds old, at
# the next look for them (every CELERY_UNACKED_RESTORE_INTERVAL seconds): within a minute. A
# live worker scores the messages it holds afresh every third of it (bklog_app/unacked_refresh.py),
# so it bounds no task or batch.
CELERY_VISIBILITY_TIMEOUT = env.int("CELERY_VISIBILITY_TIMEOUT", default=45)
CELERY_UNACKED_RESTORE_INTERVAL = env.int("CELERY_UNACKED_RESTORE_INTERVAL", default=5)
BKLOG_WORKER_ROLE = env.str("BKLOG_WORKER_ROLE", default="all")
SCHEDULE_LOCK_TTL = env.int("SCHEDULE_LOCK_TTL", default=60)
# Every node may run beat; the one holding a Redis lease sends (bklog_app/beat_leader.py). A dead
# leader's lease lapses after BEAT_LEADER_TTL_SECONDS; the others look every CHECK seconds.
BEAT_LEADER_TTL_SECONDS = env.int("BEAT_LEADER_TTL_SECONDS", default=15)
BEAT_LEADER_CHECK_SECONDS = env.float("BEAT_LEADER_CHECK_SECONDS", default=5.0)

# --- Capture and ingestion -----------------------------------------------------------------

# Proxies whose X-Forwarded-For is believed (IPs or CIDR networks). Empty: use the socket peer.
CAPTURE_TRUSTED_PROXIES = env.list("CAPTURE_TRUSTED_PROXIES", default=[])
CAPTURE_MAX_EVENT_BYTES = env.int("CAPTURE_MAX_EVENT_BYTES", default=2 * 1024 * 1024)
CAPTURE_MAX_BATCH_BYTES = env.int("CAPTURE_MAX_BATCH_BYTES", default=20 * 1024 * 1024)
# Capture requests of one web process wait up to CAPTURE_LINGER_MS for each other and go to the
# broker as one message (at most CAPTURE_COALESCE_EVENTS events): pipeline/ingestion/coalesce.py.
# 3 ms keeps capture p99 under 10 ms; 10 ms costs ingestion less CPU per event (a quarter less
# than 4 ms did at 1,000 single-event req/s: docs/performance.md, "The capture linger").
CAPTURE_LINGER_MS = env.float("CAPTURE_LINGER_MS", default=3.0)
CAPTURE_COALESCE_EVENTS = env.int("CAPTURE_COALESCE_EVENTS", default=500)
DATA_UPLOAD_MAX_MEMORY_SIZE = CAPTURE_MAX_BATCH_BYTES + 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FIELDS = 10_000

# A uuid seen within this window is stored once, however often it is delivered.
INGESTION_DEDUP_WINDOW_SECONDS = env.int("INGESTION_DEDUP_WINDOW_SECONDS", default=24 * 3600)
# Captured requests are gathered into one ClickHouse INSERT: at most this many messages (one
# per request) or events, or whatever arrived within INGESTION_BATCH_SECONDS.
INGESTION_BATCH_MESSAGES = env.int("INGESTION_BATCH_MESSAGES", default=200)
INGESTION_BATCH_EVENTS = env.int("INGESTION_BATCH_EVENTS", default=5_000)
INGESTION_BATCH_SECONDS = env.float("INGESTION_BATCH_SECONDS", default=0.2)
# Group commit: a batch goes to a free pool process once its first message has waited this long
# (pipeline/ingestion/tasks.py); INGESTION_BATCH_SECONDS or more batches on time alone.
INGESTION_BATCH_LINGER_SECONDS = env.float("INGESTION_BATCH_LINGER_SECONDS", default=0.05)
# Backoff while a dependency (ClickHouse, Redis, the database) is down: doubling, capped.
INGESTION_RETRY_MAX_SECONDS = env.int("INGESTION_RETRY_MAX_SECONDS", default=60)
# The capture journal (pipeline/ingestion/journal.py): how often it is swept, and how long a
# message may go unhandled before the sweep checks whether it was lost. A message lost between
# the queue and kombu's unacked set is published again within about the sum of the two.
INGESTION_JOURNAL_SWEEP_SECONDS = env.int("INGESTION_JOURNAL_SWEEP_SECONDS", default=30)
INGESTION_JOURNAL_GRACE_SECONDS = env.int("INGESTION_JOURNAL_GRACE_SECONDS", default=60)
# Isolation between projects (pipeline/ingestion/isolation.py): a project whose plugin chain is
# slow or failing over the window moves to the ingestion_overflow queue, and back once under the
# RECOVER thresholds for at least MIN_OVERFLOW_SECONDS.
INGESTION_ISOLATION_ENABLED = env.bool("INGESTION_ISOLATION_ENABLED", default=True)
INGESTION_ISOLATION_WINDOW_SECONDS = env.float("INGESTION_ISOLATION_WINDOW_SECONDS", default=60.0)
INGESTION_ISOLATION_MIN_EVENTS = env.int("INGESTION_ISOLATION_MIN_EVENTS", default=20)
INGESTION_ISOLATION_OVERFLOW_MS = env.float("INGESTION_ISOLATION_OVERFLOW_MS", default=50.0)
INGESTION_ISOLATION_OVERFLOW_ERROR_RATE = env.float("INGESTION_ISOLATION_OVERFLOW_ERROR_RATE", default=0.5)
INGESTION_ISOLATION_RECOVER_MS = env.float("INGESTION_ISOLATION_RECOVER_MS", default=20.0)
INGESTION_ISOLATION_RECOVER_ERROR_RATE = env.float("INGESTION_ISOLATION_RECOVER_ERROR_RATE", default=0.2)
INGESTION_ISOLATION_MIN_OVERFLOW_SECONDS = env.float("INGESTION_ISOLATION_MIN_OVERFLOW_SECONDS", default=60.0)
# Data governance (pipeline/governance/definitions.py): each worker process writes the last-seen
# time of the event and property names it saw at most this often.
GOVERNANCE_LAST_SEEN_SECONDS = env.float("GOVERNANCE_LAST_SEEN_SECONDS", default=60.0)

PLUGINS_RELOAD_PUBSUB_CHANNEL = env.str("PLUGINS_RELOAD_PUBSUB_CHANNEL", default="reload-plugins")

# --- Plugins -------------------------------------------------------------------------------

PLUGINS_DIR = env.str("PLUGINS_DIR", default=str(VAR_DIR / "plugins"))
PLUGIN_TIMEOUT_SECONDS = env.float("PLUGIN_TIMEOUT_SECONDS", default=30.0)
# Limits on plugin code (pipeline/plugins/limits.py, docs/plugins.md#limits). A test run runs on a
# `default` worker under its own, shorter time limit; the API waits for its answer this long.
PLUGIN_TEST_RUN_TIMEOUT_SECONDS = env.float("PLUGIN_TEST_RUN_TIMEOUT_SECONDS", default=5.0)
PLUGIN_TEST_RUN_WAIT_SECONDS = env.float("PLUGIN_TEST_RUN_WAIT_SECONDS", default=20.0)
# Address space a worker's pool process may grow by after start-up (0: no limit).
PLUGIN_MEMORY_LIMIT_MB = env.int("PLUGIN_MEMORY_LIMIT_MB", default=1024)
PLUGIN_LOG_MAX_ENTRIES_PER_CALL = env.int("PLUGIN_LOG_MAX_ENTRIES_PER_CALL", default=1000)
PLUGIN_LOG_MAX_CHARS_PER_CALL = env.int("PLUGIN_LOG_MAX_CHARS_PER_CALL", default=1_000_000)
# Stack frames a plugin call may add to the stack it is called from.
PLUGIN_RECURSION_LIMIT = env.int("PLUGIN_RECURSION_LIMIT", default=500)
GEOIP_DATABASE_PATH = env.str("GEOIP_DATABASE_PATH", default="")
# A config whose calls fail this many times in a row is disabled, with the reason.
PLUGIN_AUTO_DISABLE_AFTER_FAILURES = env.int("PLUGIN_AUTO_DISABLE_AFTER_FAILURES", default=100)
PLUGIN_CHAIN_CACHE_SECONDS = env.float("PLUGIN_CHAIN_CACHE_SECONDS", default=60.0)
# Live plugin instances a process keeps (about 1 KB each); past it the least recently used is
# torn down and set up again on its next use (0: no limit). docs/operations.md#capacity-planning
PLUGIN_MAX_LIVE_INSTANCES = env.int("PLUGIN_MAX_LIVE_INSTANCES", default=50_000)
PLUGIN_JOB_POLL_SECONDS = env.int("PLUGIN_JOB_POLL_SECONDS", default=5)
# Work due within this many seconds is handed to Celery with a countdown; later work waits in
# the database for the poller (Redis redelivers long-ETA messages after its visibility timeout).
PLUGIN_MAX_COUNTDOWN_SECONDS = env.int("PLUGIN_MAX_COUNTDOWN_SECONDS", default=60)
PLUGIN_RETRY_DELAY_SCALE = env.float("PLUGIN_RETRY_DELAY_SCALE", default=1.0)
PLUGIN_SCHEDULE_MINUTE_SECONDS = env.int("PLUGIN_SCHEDULE_MINUTE_SECONDS", default=60)
DISTINCT_ID_LRU_SIZE = env.int("DISTINCT_ID_LRU_SIZE", default=10_000)

# --- Exports (docs/contracts.md#exports) -----------------------------------------------------

EXPORTS_DIR = env.str("EXPORTS_DIR", default=str(VAR_DIR / "exports"))
# Rows per committed chunk: a resumed export carries on after the last committed chunk.
EXPORT_CHUNK_ROWS = env.int("EXPORT_CHUNK_ROWS", default=10_000)
# Events per export_events call of a historical export.
EXPORT_HISTORICAL_BATCH_ROWS = env.int("EXPORT_HISTORICAL_BATCH_ROWS", default=500)
EXPORT_LINK_TTL_HOURS = env.int("EXPORT_LINK_TTL_HOURS", default=24)
EXPORT_GZIP_LEVEL = env.int("EXPORT_GZIP_LEVEL", default=6)
# A run holds a Redis lock per export, renewed every chunk; a dead run's lock lapses after this.
EXPORT_LOCK_TTL_SECONDS = env.int("EXPORT_LOCK_TTL_SECONDS", default=120)
# A run hands over to a fresh task after this long: a long export is a chain of short tasks. (A
# running task's message is kept fresh by its worker, so it is not bounded by the visibility timeout.)
EXPORT_SLICE_SECONDS = env.int("EXPORT_SLICE_SECONDS", default=300)
# Queued or running exports with no sign of life for this long are queued again.
EXPORT_STALL_SECONDS = env.int("EXPORT_STALL_SECONDS", default=300)
EXPORT_WATCHDOG_INTERVAL_SECONDS = env.int("EXPORT_WATCHDOG_INTERVAL_SECONDS", default=60)
EXPORT_CLEANUP_INTERVAL_SECONDS = env.int("EXPORT_CLEANUP_INTERVAL_SECONDS", default=3600)
# A pause between chunks, to leave ClickHouse room for other queries during big exports.
EXPORT_CHUNK_DELAY_SECONDS = env.float("EXPORT_CHUNK_DELAY_SECONDS", default=0.0)

# --- Operations --------------------------------------------------------------------------

HEALTHCHECK_MAX_STALE_SECONDS = env.int("HEALTHCHECK_MAX_STALE_SECONDS", default=7200)
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
LOG_FORMAT = env.str("LOG_FORMAT", default="text")
SENTRY_DSN = env.str("SENTRY_DSN", default="")

# Consul registration from Gunicorn's hooks (gunicorn_config.py).
CONSUL_ENABLED = env.bool("CONSUL_ENABLED", default=True)
CONSUL_HTTP_ADDR = env.str("CONSUL_HTTP_ADDR", default="127.0.0.1:8500")
CONSUL_HTTP_TOKEN = env.str("CONSUL_HTTP_TOKEN", default="")
CONSUL_HTTP_SSL = env.bool("CONSUL_HTTP_SSL", default=False)
CONSUL_HTTP_SSL_VERIFY = env.bool("CONSUL_HTTP_SSL_VERIFY", default=True)
CONSUL_CACERT = env.str("CONSUL_CACERT", default="")
CONSUL_CLIENT_CERT = env.str("CONSUL_CLIENT_CERT", default="")
CONSUL_CLIENT_KEY = env.str("CONSUL_CLIENT_KEY", default="")
CONSUL_TIMEOUT_SECONDS = env.float("CONSUL_TIMEOUT_SECONDS", default=5.0)
CONSUL_RETRY_MAX_SECONDS = env.float("CONSUL_RETRY_MAX_SECONDS", default=60.0)
CONSUL_SERVICE_NAME = env.str("CONSUL_SERVICE_NAME", default="bklog-api")
CONSUL_SERVICE_ADDRESS = env.str("CONSUL_SERVICE_ADDRESS", default="")
CONSUL_SERVICE_TAGS = env.list("CONSUL_SERVICE_TAGS", default=["bklog", "http"])
CONSUL_CHECK_INTERVAL = env.str("CONSUL_CHECK_INTERVAL", default="10s")
CONSUL_CHECK_TIMEOUT = env.str("CONSUL_CHECK_TIMEOUT", default="5s")
CONSUL_DEREGISTER_CRITICAL_AFTER = env.str("CONSUL_DEREGISTER_CRITICAL_AFTER", default="1m")

# Prometheus multiprocess mode: every Gunicorn and Celery process writes its metrics here and
# /metrics adds them up. Child processes inherit the variable.
PROMETHEUS_MULTIPROC_DIR = env.str("PROMETHEUS_MULTIPROC_DIR", default=str(VAR_DIR / "prometheus"))
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", PROMETHEUS_MULTIPROC_DIR)
# > 0: each Celery worker also serves its own samples on this port (workers on machines or in
# containers without a web process). Leave 0 where the web tier shares their folder.
BKLOG_WORKER_METRICS_PORT = env.int("BKLOG_WORKER_METRICS_PORT", default=0)

LOGGING_CONFIG = None  # configured once by bklog_app.logging.configure_logging

from bklog_app.logging import configure_logging  # noqa: E402

configure_logging(LOG_LEVEL, LOG_FORMAT)

if SENTRY_DSN:  # pragma: no cover - needs a Sentry server
    import sentry_sdk

    sentry_sdk.init(dsn=SENTRY_DSN, release=VERSION, send_default_pii=False)

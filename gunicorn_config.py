"""Gunicorn settings, from environment variables, and the Consul registration hooks.

Run: `gunicorn -c gunicorn_config.py bklog_app.wsgi:application`. Every GUNICORN_* variable is
listed with its default in the README's configuration table. `when_ready` registers the service in Consul from
a background thread (bklog_app/consul_registration.py), so Consul being down or slow never holds
up or stops Gunicorn; `on_exit` deregisters it.
"""

import os

# GUNICORN_WORKER_CLASS. A capture request spends most of its time waiting (on Redis, and up to
# CAPTURE_LINGER_MS for others to share its message, pipeline/ingestion/coalesce.py), and a
# greenlet waits for a fraction of what a thread handoff costs under the GIL (on the bench
# machine 0.43 ms of CPU per request against 0.62 ms for gthread with 16 threads, for a trivial
# app that waits 10 ms). `pywsgi` (the default) is gevent's own HTTP server held to the Gunicorn
# settings below (bklog_app/web_worker.py); `gevent` is Gunicorn's parser under gevent; `gthread`
# the fallback without gevent; a dotted path names any other worker class.
WORKER_CLASSES = {"pywsgi": "bklog_app.web_worker.Worker", "gevent": "gevent", "gthread": "gthread"}
_chosen = os.environ.get("GUNICORN_WORKER_CLASS", "pywsgi")
worker_class = WORKER_CLASSES.get(_chosen, _chosen)

# gevent must patch the standard library before anything else imports it: the master loads this
# file, then the logger and hooks below import bklog_app (its Celery app, Django's database
# layer), and a thread-local that Django creates before the patch is shared by every greenlet
# of a worker ("DatabaseWrapper objects created in a thread can only be used in that same
# thread"). The gevent workers patch again after the fork; a second patch is a no-op.
if worker_class in ("bklog_app.web_worker.Worker", "gevent", "gevent_pywsgi", "gevent_wsgi"):
    from gevent import monkey

    monkey.patch_all()

import multiprocessing  # noqa: E402 (after the patch above)


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


bind = os.environ.get("GUNICORN_BIND", f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}")
workers = _env_int("GUNICORN_WORKERS", max(2, multiprocessing.cpu_count()))
worker_connections = _env_int("GUNICORN_WORKER_CONNECTIONS", 1000)  # gevent: requests in flight per worker
threads = _env_int("GUNICORN_THREADS", 16)  # gthread only
timeout = _env_int("GUNICORN_TIMEOUT", 30)
graceful_timeout = _env_int("GUNICORN_GRACEFUL_TIMEOUT", 30)
keepalive = _env_int("GUNICORN_KEEPALIVE", 5)
# Recycle workers now and then (leaks in third-party code); jitter spreads the restarts.
# A recycle is not free at capture rates: the new worker imports Django again (1-2 s of CPU
# that the other worker's requests wait behind) and the old one's keep-alive clients all
# reconnect at once. At 100,000 a worker recycled every minute or two at 1,000 req/s and each
# recycle showed as a latency spike of 100-200 ms; a million is a quarter of an hour at that rate.
max_requests = _env_int("GUNICORN_MAX_REQUESTS", 1_000_000)
max_requests_jitter = _env_int("GUNICORN_MAX_REQUESTS_JITTER", 100_000)
accesslog = os.environ.get("GUNICORN_ACCESSLOG", "-")
logger_class = "bklog_app.gunicorn_logging.AccessLogger"  # capture requests: no access line by default
# %(M)s: request time in milliseconds.
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s" request_id=%({x-request-id}o)s'
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()


def _logconfig_dict() -> dict:
    """Gunicorn's error and access lines in the format of every other bklog log line
    (LOG_FORMAT=json: one JSON object per line; request ids are in the access line)."""
    from bklog_app.logging import formatter_config

    def handler(stream: str) -> dict:
        return {"class": "logging.StreamHandler", "formatter": "bklog", "stream": stream}

    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"bklog": formatter_config(os.environ.get("LOG_FORMAT", "text"))},
        "handlers": {"error_console": handler("ext://sys.stderr"), "console": handler("ext://sys.stdout")},
        "loggers": {
            "gunicorn.error": {"level": loglevel.upper(), "handlers": ["error_console"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": False},
        },
    }


logconfig_dict = _logconfig_dict()
proc_name = "bklog-web"
# Behind a proxy that sets X-Forwarded-* (ingress, load balancer): which peers to believe.
forwarded_allow_ips = os.environ.get("GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1")


def on_starting(server):
    """Before any worker forks: the metrics folder every worker writes to (pipeline/metrics.py)."""
    from bklog_app.consul_registration import django_settings

    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(django_settings().PROMETHEUS_MULTIPROC_DIR))
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)


def when_ready(server):
    from bklog_app.consul_registration import on_gunicorn_ready

    on_gunicorn_ready(server)


def child_exit(server, worker):
    from pipeline.metrics import mark_process_dead

    mark_process_dead(worker.pid)


def on_exit(server):
    from bklog_app.consul_registration import on_gunicorn_exit

    on_gunicorn_exit(server)

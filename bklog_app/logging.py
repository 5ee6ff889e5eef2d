"""One log format for every process: readable text by default, JSON lines with LOG_FORMAT=json.

Both the standard library's loggers (Django, Celery, Gunicorn) and structlog loggers go through
the same formatter, so a collector sees one shape. Request ids (web) and task ids (workers) are
bound with structlog's contextvars and appear on every line written while they are bound.
"""

import logging
import logging.config

import structlog

_configured = False


def _shared_processors() -> list:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def formatter_config(fmt: str = "text") -> dict:
    """The dictConfig formatter every handler uses; Gunicorn's own loggers use it too
    (gunicorn_config.py), so that its access and error lines have the same shape."""
    renderer = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    return {
        "()": structlog.stdlib.ProcessorFormatter,
        "processors": [
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
        "foreign_pre_chain": _shared_processors(),
    }


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    global _configured
    if _configured:
        return
    _configured = True

    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"bklog": formatter_config(fmt)},
            "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "bklog"}},
            "root": {"handlers": ["console"], "level": level},
            "loggers": {
                "django.db.backends": {"level": "INFO"},
                "kombu": {"level": "WARNING"},
                "urllib3": {"level": "WARNING"},
            },
        }
    )
    logging.captureWarnings(True)  # Python warnings as log lines of the same format
    structlog.configure(
        processors=[
            *_shared_processors(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )

"""The test run (docs/contracts.md#plugin-api): a config's `process_event` on a sample event, without side effects.

A fresh instance is loaded with a dry-run `meta` (storage and cache writes stay in memory, jobs
are only logged, log lines are returned rather than stored), set up, called once, torn down.
Nothing is recorded on the config.

A test run never executes in the web process: a plugin that loops or eats memory there would
stall every request its worker serves. The web process reads the config and its code into a
`TestRunRequest`, pipeline/plugins/tasks.py queues it on `default`, and a worker runs it under
PLUGIN_TEST_RUN_TIMEOUT_SECONDS per call and the pool process's memory limit, then pushes the
answer to the request's own Redis list. The web process waits on that list with BLPOP for at
most PLUGIN_TEST_RUN_WAIT_SECONDS (a blocking read that gevent turns into a greenlet switch), and
`NoWorkerAnswered` says when nothing came.
"""

import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

import orjson
import redis
from django.conf import settings

from bklog_app.plugins.models import PluginAttachment
from pipeline.plugins.chain import check_output, private_copy
from pipeline.plugins.limits import call_within_limits
from pipeline.plugins.loader import PluginCode, PluginLoadError, code_for, execute
from pipeline.plugins.logs import LogSink, capturing
from pipeline.plugins.meta import Meta
from pipeline.redis import connect

REPLY_PREFIX = "plugins:test-run:"
REPLY_TTL_SECONDS = 60
TIME_LIMIT_SETTING = "PLUGIN_TEST_RUN_TIMEOUT_SECONDS"


class NoWorkerAnswered(Exception):
    """No worker answered a test run within PLUGIN_TEST_RUN_WAIT_SECONDS."""


class RedisUnavailable(Exception):
    """The test run could not be queued, or its answer read: Redis (the broker) is down."""


@dataclass(frozen=True)
class TestRunRequest:
    """What a worker needs to run a test: the code and config as the caller saw them, the sample
    event, the per-call time limit, and where to push the answer. The message of the test-run task."""

    __test__ = False  # not a pytest test class

    plugin_id: int
    plugin_config_id: int
    project_id: int
    config: dict
    code: dict  # PluginCode's fields, main_path as a string
    event: dict
    seconds: float
    reply_key: str

    @classmethod
    def for_config(cls, plugin_config, event: dict) -> "TestRunRequest":
        code = asdict(code_for(plugin_config.plugin))
        code["main_path"] = None if code["main_path"] is None else str(code["main_path"])
        return cls(
            plugin_id=plugin_config.plugin_id,
            plugin_config_id=plugin_config.pk,
            project_id=plugin_config.project_id,
            config=dict(plugin_config.config or {}),
            code=code,
            event=event,
            seconds=settings.PLUGIN_TEST_RUN_TIMEOUT_SECONDS,
            reply_key=f"{REPLY_PREFIX}{uuid.uuid4().hex}",
        )

    def as_message(self) -> dict:
        return asdict(self)

    @classmethod
    def from_message(cls, message: dict) -> "TestRunRequest":
        return cls(**message)

    def plugin_code(self) -> PluginCode:
        main_path = self.code["main_path"]
        return PluginCode(**{**self.code, "main_path": None if main_path is None else Path(main_path)})


def sample_event(project_id: int, event: dict) -> dict:
    """The event as process_event sees it in ingestion, with what the sample leaves out filled in."""
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return {
        "uuid": str(event.get("uuid") or uuid.uuid4()),
        "event": event.get("event") or "$test_event",
        "distinct_id": str(event.get("distinct_id") or "test-distinct-id"),
        "team_id": project_id,
        "properties": dict(event.get("properties") or {}),
        "timestamp": event.get("timestamp") or now,
        "ip": event.get("ip"),
        "now": event.get("now") or now,
        "sent_at": event.get("sent_at"),
        "$set": event.get("$set"),
        "$set_once": event.get("$set_once"),
    }


def not_loaded(plugin_config, exc: PluginLoadError) -> dict:
    """The answer for a plugin whose files cannot be read (in the web process: no code has run)."""
    sink = LogSink(plugin_config.pk, plugin_config.project_id, "", persist=False)
    sink.system("ERROR", f"the plugin could not be loaded: {type(exc).__name__}: {exc}")
    return _answer(None, sink, exc)


def dry_run(request: TestRunRequest) -> dict:
    """{"event": output or None, "logs": [...], "error": None or {"name", "message"}}. Runs on a worker."""
    instance_id = f"test-{uuid.uuid4().hex[:12]}"
    sink = LogSink(request.plugin_config_id, request.project_id, instance_id, persist=False)
    source = sample_event(request.project_id, request.event)
    output, error = None, None
    seconds = request.seconds
    with capturing(sink):
        try:
            namespace = execute(request.plugin_code(), seconds, TIME_LIMIT_SETTING)
            jobs = namespace.get("jobs")
            meta = Meta(
                plugin_id=request.plugin_id,
                plugin_config_id=request.plugin_config_id,
                project_id=request.project_id,
                instance_id=instance_id,
                config=dict(request.config),
                attachments={
                    a.key: {"file_name": a.file_name, "content_type": a.content_type, "contents": bytes(a.contents)}
                    for a in PluginAttachment.objects.filter(plugin_config_id=request.plugin_config_id)
                },
                job_names=[k for k in jobs if callable(jobs[k])] if isinstance(jobs, dict) else [],
                sink=sink,
                dry_run=True,
            )
        except Exception as exc:
            sink.system("ERROR", f"the plugin could not be loaded: {type(exc).__name__}: {exc}")
            return _answer(None, sink, exc)
        set_up = False
        try:
            if callable(namespace.get("setup_plugin")):
                _call(namespace["setup_plugin"], (meta,), seconds, "setup_plugin")
            set_up = True
            if callable(namespace.get("process_event")):
                output = _call(namespace["process_event"], (private_copy(source), meta), seconds, "process_event")
                if output is not None:
                    check_output(output, source.get("team_id"))
            else:
                sink.system("INFO", "the plugin has no process_event: the event passes through unchanged")
                output = source
        except Exception as exc:
            sink.system("ERROR", f"{type(exc).__name__}: {exc}")
            output, error = None, exc
        finally:
            if set_up and callable(namespace.get("teardown_plugin")):
                try:
                    _call(namespace["teardown_plugin"], (meta,), seconds, "teardown_plugin")
                except Exception as exc:
                    sink.system("ERROR", f"teardown_plugin failed: {type(exc).__name__}: {exc}")
    return _answer(output, sink, error)


def _call(fn, args: tuple, seconds: float, what: str):
    return call_within_limits(fn, args, seconds, what, TIME_LIMIT_SETTING)


def _answer(output: dict | None, sink: LogSink, error: BaseException | None) -> dict:
    return {
        "event": output,
        "logs": [line.as_dict() for line in sink.lines],
        "error": None if error is None else {"name": type(error).__name__, "message": str(error)},
    }


def answer(request: TestRunRequest) -> None:
    """Run the test and push its answer for the waiting web process (on a worker)."""
    body = orjson.dumps(dry_run(request), default=str, option=orjson.OPT_NON_STR_KEYS)
    pipe = _replies().pipeline(transaction=False)
    pipe.rpush(request.reply_key, body)
    pipe.expire(request.reply_key, REPLY_TTL_SECONDS)
    pipe.execute()


def wait_for_answer(request: TestRunRequest, seconds: float) -> dict:
    """The worker's answer, or NoWorkerAnswered after `seconds` (in the web process)."""
    reply = _replies().blpop([request.reply_key], timeout=seconds)
    if reply is None:
        raise NoWorkerAnswered(
            f"No worker answered the test run within {seconds:g} s (PLUGIN_TEST_RUN_WAIT_SECONDS): "
            "is a worker consuming the `default` queue?"
        )
    return orjson.loads(reply[1])


@lru_cache(maxsize=4)
def _client_for(url: str, read_timeout: float) -> redis.Redis:
    return connect(url, socket_timeout=read_timeout)


def _replies() -> redis.Redis:
    """A client whose reads outlast the longest BLPOP (the shared one times out after 5 s)."""
    return _client_for(settings.REDIS_URL, settings.PLUGIN_TEST_RUN_WAIT_SECONDS + 5)

"""The test run (docs/contracts.md#plugin-api): a config's `process_event` on a sample event, without side effects.

A fresh instance is loaded with a dry-run `meta` (storage and cache writes stay in memory, jobs
are only logged, log lines are returned rather than stored), set up, called once, torn down.
Nothing is recorded on the config.
"""

import uuid
from datetime import UTC, datetime

from django.conf import settings

from bklog_app.plugins.models import PluginAttachment
from pipeline.plugins.chain import check_output, private_copy
from pipeline.plugins.loader import code_for, execute
from pipeline.plugins.logs import LogSink, capturing
from pipeline.plugins.meta import Meta
from pipeline.plugins.timeouts import call_with_time_limit


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


def dry_run(plugin_config, event: dict) -> dict:
    """{"event": output or None, "logs": [...], "error": None or {"name", "message"}}."""
    instance_id = f"test-{uuid.uuid4().hex[:12]}"
    sink = LogSink(plugin_config.pk, plugin_config.project_id, instance_id, persist=False)
    source = sample_event(plugin_config.project_id, event)
    output, error = None, None
    with capturing(sink):
        try:
            namespace = execute(code_for(plugin_config.plugin))
            jobs = namespace.get("jobs")
            meta = Meta(
                plugin_id=plugin_config.plugin_id,
                plugin_config_id=plugin_config.pk,
                project_id=plugin_config.project_id,
                instance_id=instance_id,
                config=dict(plugin_config.config or {}),
                attachments={
                    a.key: {"file_name": a.file_name, "content_type": a.content_type, "contents": bytes(a.contents)}
                    for a in PluginAttachment.objects.filter(plugin_config_id=plugin_config.pk)
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
                _call(namespace["setup_plugin"], (meta,), "setup_plugin")
            set_up = True
            if callable(namespace.get("process_event")):
                output = _call(namespace["process_event"], (private_copy(source), meta), "process_event")
                if output is not None:
                    check_output(output, source)
            else:
                sink.system("INFO", "the plugin has no process_event: the event passes through unchanged")
                output = source
        except Exception as exc:
            sink.system("ERROR", f"{type(exc).__name__}: {exc}")
            output, error = None, exc
        finally:
            if set_up and callable(namespace.get("teardown_plugin")):
                try:
                    _call(namespace["teardown_plugin"], (meta,), "teardown_plugin")
                except Exception as exc:
                    sink.system("ERROR", f"teardown_plugin failed: {type(exc).__name__}: {exc}")
    return _answer(output, sink, error)


def _call(fn, args: tuple, what: str):
    return call_with_time_limit(fn, args, settings.PLUGIN_TIMEOUT_SECONDS, what)


def _answer(output: dict | None, sink: LogSink, error: BaseException | None) -> dict:
    return {
        "event": output,
        "logs": [line.as_dict() for line in sink.lines],
        "error": None if error is None else {"name": type(error).__name__, "message": str(error)},
    }

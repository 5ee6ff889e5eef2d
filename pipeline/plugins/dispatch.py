"""Ingestion step 8: hand stored events to on_event / export_events work on the default queue.

The ingestion batch calls this after a successful INSERT. A project with no such configs costs
one in-process dict lookup (the same cache as the chain of step 4). The events are stored by
then, so a failure here is logged and never fails the batch. Ingestion is no task module of
the plugin runtime, so the on_event tasks are queued by name (pipeline/celery_tasks.py).
"""

from collections.abc import Sequence

import structlog

from pipeline.celery_tasks import send
from pipeline.plugins import export_buffer, registry
from pipeline.plugins.events import plugin_event
from pipeline.queues import TaskName

logger = structlog.get_logger(__name__)


def wants_stored_events(project_id: int) -> bool:
    """Whether any enabled plugin of the project has on_event or export_events."""
    return bool(registry.project_plugins(project_id).after_storage)


def dispatch_stored_events(events: Sequence[dict]) -> None:
    by_project: dict[int, list[dict]] = {}
    plugins_of: dict[int, registry.ProjectPlugins] = {}
    for event in events:
        project_id = event["team_id"]
        plugins = plugins_of.get(project_id)
        if plugins is None:
            plugins = plugins_of[project_id] = registry.project_plugins(project_id)
        if plugins.after_storage:
            by_project.setdefault(project_id, []).append(event)
    for project_id, stored in by_project.items():
        try:
            _dispatch_project(plugins_of[project_id], [plugin_event(event) for event in stored])
        except Exception:
            logger.exception(
                "could not hand stored events to on_event / export_events; they are stored, but these "
                "plugins miss them",
                project_id=project_id,
                events=len(stored),
            )


def _dispatch_project(plugins: registry.ProjectPlugins, events: list[dict]) -> None:
    for snapshot in plugins.on_event:
        send(TaskName.PLUGIN_ON_EVENT, snapshot.id, events, 1)
    for snapshot in plugins.export_events:
        export_buffer.buffer_events(snapshot, events)

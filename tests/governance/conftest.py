"""Helpers for the governance tests: captured messages for the batch, a plan set in one call."""

import uuid

import pytest

SIGNUP_SCHEMA = {
    "type": "object",
    "properties": {"plan": {"type": "string", "enum": ["free", "pro"]}, "seats": {"type": "integer", "minimum": 1}},
    "required": ["plan"],
}


def message(project, events: list[dict]) -> dict:
    return {"id": str(uuid.uuid4()), "token": project.api_token, "project_id": project.id, "ip": None,
            "now": "2024-06-01T00:00:00.000+00:00", "sent_at": None, "events": events}  # fmt: skip


def event(name: str, properties: dict | None = None) -> dict:
    return {"event": name, "distinct_id": "user-1", "uuid": str(uuid.uuid4()), "properties": properties or {}}


@pytest.fixture
def set_plan():
    """Save a plan with the ORM and make this process see it at once (the API's save reaches
    workers through the project epoch when its transaction commits, which a test's never does)."""

    from bklog_app.governance.models import TrackingPlan

    def set_plan(project, **fields) -> "TrackingPlan":
        fields.setdefault("events", {"signed_up": {"schema": SIGNUP_SCHEMA}})
        plan, _ = TrackingPlan.objects.update_or_create(project=project, defaults=fields)
        reload_plans()
        return plan

    return set_plan


def reload_plans() -> None:
    """This process reads the plans afresh."""
    from pipeline.governance import ingestion
    from pipeline.ingestion import projects

    projects.forget()
    ingestion._plans.clear()

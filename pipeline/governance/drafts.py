"""A draft tracking plan from the definitions: every event a project sent, with the properties
seen on it and their inferred types (docs/governance.md#drafting-a-plan).

Names starting with `$` are left out, events and properties alike: SDKs send them, and the plan
exempts `$` events unless it names them. No property is required and unknown ones are allowed,
so the draft accepts what was seen; tighten it before enforcing it.
"""

from bklog_app.governance.models import EventDefinition, EventProperty, PropertyDefinition, PropertyType

JSON_TYPES = {
    PropertyType.STRING: "string",
    PropertyType.NUMERIC: "number",
    PropertyType.BOOLEAN: "boolean",
    PropertyType.DATETIME: "string",
    PropertyType.OBJECT: "object",
    PropertyType.ARRAY: "array",
}


def draft_plan(project_id: int) -> dict:
    events = sorted(
        name
        for name in EventDefinition.objects.filter(project_id=project_id).values_list("name", flat=True)
        if not name.startswith("$")
    )
    types = dict(PropertyDefinition.objects.filter(project_id=project_id).values_list("name", "property_type"))
    properties: dict[str, dict] = {name: {} for name in events}
    pairs = EventProperty.objects.filter(project_id=project_id).values_list("event", "property").order_by("property")
    for event, name in pairs:
        if event in properties and not name.startswith("$") and name in types:
            properties[event][name] = {"type": JSON_TYPES[types[name]]}
    return {
        "mode": "observe",
        "allow_unplanned_events": True,
        "on_unknown_property": "allow",
        "events": {name: {"schema": {"type": "object", "properties": properties[name]}} for name in events},
    }

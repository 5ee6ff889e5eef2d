"""Stored events as `on_event` and `export_events` receive them (docs/contracts.md#plugin-api)."""

from pipeline.ingestion.elements import chain_to_elements


def plugin_event(stored: dict) -> dict:
    """uuid, event, distinct_id, team_id, properties, timestamp, person_id, person_properties,
    elements (parsed from the stored elements chain)."""
    return {
        "uuid": stored["uuid"],
        "event": stored["event"],
        "distinct_id": stored["distinct_id"],
        "team_id": stored["team_id"],
        "properties": stored.get("properties") or {},
        "timestamp": stored["timestamp"],
        "person_id": stored.get("person_id"),
        "person_properties": stored.get("person_properties") or {},
        "elements": chain_to_elements(stored.get("elements_chain") or ""),
    }

"""Ingest a batch of captured requests: docs/contracts.md#ingestion-order, steps 1 to 8, in order.

A *message* here is what one capture request enqueued, as the ingestion task took it off the
queue: a `ReceivedRequest` (pipeline/ingestion/message.py: the project token, the raw events, the
client IP, the receive time, `sent_at`, and the id of the queue message that carried it). Several
are ingested together so that ClickHouse gets one INSERT for all of them.

Failures split two ways. A dependency outage (ClickHouse, Redis, the database) raises out of
`ingest_messages`, and the caller retries the whole batch: nothing was acknowledged, and dedup
makes the retry safe. Anything else wrong with one event sends that event, raw, to the
dead-letter store with the step and the error, and the batch goes on.

The batch also measures what each project's plugin chain cost (`BatchReport.chain_costs`, for
pipeline/ingestion/isolation.py), and `set_aside` picks out the requests of projects in overflow
that came on the `ingestion` queue, for the task to move to `ingestion_overflow`.
"""

import time
import uuid as uuid_module
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog
from redis.client import Pipeline

from pipeline.errors import is_outage
from pipeline.governance.ingestion import apply_tracking_plan, load_plans, record_batch
from pipeline.ingestion import dedup
from pipeline.ingestion.elements import elements_to_chain
from pipeline.ingestion.isolation import ChainCost
from pipeline.ingestion.message import ReceivedRequest, canonical_uuid, context_of
from pipeline.ingestion.projects import ProjectInfo, load_tokens, project_by_id, project_for_token
from pipeline.ingestion.records import BatchRecords
from pipeline.ingestion.status import record_ingested
from pipeline.ingestion.timestamps import parse_iso, parse_request_time, resolve_timestamp, to_ms
from pipeline.persons.resolve import resolve_batch
from pipeline.plugins.chain import Chains
from pipeline.plugins.dispatch import dispatch_stored_events, wants_stored_events
from pipeline.plugins.registry import load_project_plugins
from pipeline.privacy.suppression import SuppressionCheck
from pipeline.redis import get_redis
from pipeline.storage.events import EventRow, insert_events, ms_to_iso
from pipeline.uuids import parse_canonical

logger = structlog.get_logger(__name__)

MAX_EVENT_NAME_LENGTH = 200


@dataclass
class BatchReport:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    dropped: int = 0
    dead_lettered: int = 0
    latest_timestamp_ms: int = 0
    stored_rows: list[EventRow] = field(default_factory=list)
    chain_costs: dict[int, ChainCost] = field(default_factory=dict)  # projects whose plugins ran


@dataclass
class _Normalised:
    """An event after steps 1-5, ready for persons and storage."""

    message_id: str
    project: ProjectInfo
    uuid: uuid_module.UUID  # event["uuid"], parsed once (step 2) for the INSERT
    event: dict  # uuid, event, distinct_id, properties, timestamp_ms, elements_chain
    raw: dict  # as captured, for the dead-letter store
    context: dict


def ingest_messages(messages: list[ReceivedRequest]) -> BatchReport:
    """Run steps 1-8 for every event of every message. Raises only on a dependency outage."""
    report = BatchReport()
    records = BatchRecords()
    suppressed = SuppressionCheck()
    projects = _resolve_projects(messages)
    suppressed.load(project.id for project in projects.values() if project is not None)
    normalised = _steps_2_to_5_of_batch(messages, projects, records, report, suppressed)
    rows = _step_6_persons(normalised, records)
    # The Redis writes that follow the INSERT, sent together: dedup's confirmation first.
    writes = get_redis().pipeline(transaction=False)
    _step_7_store(rows, records, report, writes)
    record_batch(report.stored_rows, writes)  # definitions and plan violations (docs/governance.md)
    if report.stored:
        record_ingested(report.latest_timestamp_ms, writes)
    writes.execute()
    records.save()
    suppressed.save()
    report.dead_lettered = len(records.dead_letters)
    _step_8_dispatch(report.stored_rows)
    return report


def dead_letter_messages(messages: list[ReceivedRequest], error: BaseException) -> None:
    """Put every event of these messages in the dead-letter store, step `batch`."""
    records = BatchRecords()
    claims = []
    for message in messages:
        for raw in message.get("events") or []:
            records.dead_letter(message.get("project_id"), "batch", error, raw, context_of(message))
            if message.get("project_id") and isinstance(raw.get("uuid"), str):
                claims.append(dedup.Claim(message["project_id"], raw["uuid"], message["id"]))
    records.save()
    dedup.release(claims)


def set_aside(messages: list[ReceivedRequest], arrived_on_main: set[str]) -> tuple[list, list]:
    """(to run here, to move to `ingestion_overflow`): the requests of projects in overflow among
    those that came on the `ingestion` queue (`arrived_on_main`: their message ids) move."""
    keep, aside = [], []
    projects: dict[tuple, ProjectInfo | None] = {}
    load_tokens(message.get("token") or "" for message in messages if message["id"] in arrived_on_main)
    for message in messages:
        key = (message.get("token"), message.get("project_id"))
        if message["id"] in arrived_on_main and key not in projects:
            projects[key] = _resolve_project(message)
        project = projects.get(key)
        moving = message["id"] in arrived_on_main and project is not None and project.ingestion_overflow
        (aside if moving else keep).append(message)
    return keep, aside


def _resolve_projects(messages: list[ReceivedRequest]) -> dict[tuple, ProjectInfo | None]:
    """Step 1 for the whole batch: (token, project id) -> project, one lookup per token, not per
    message; the tokens, plugin chains and tracking plans no process has cached are read in one
    query each, and the projects' epoch (pipeline/ingestion/projects.py) once, by `load_tokens`."""
    load_tokens(message.get("token") or "" for message in messages)
    projects: dict[tuple, ProjectInfo | None] = {}
    for message in messages:
        key = (message.get("token"), message.get("project_id"))
        if key not in projects:
            projects[key] = _resolve_project(message)
    known = {project.id for project in projects.values() if project is not None}
    load_project_plugins(known)
    load_plans(known)
    return projects


def _resolve_project(message: ReceivedRequest) -> ProjectInfo | None:
    """Step 1. A token rotated after capture accepted the request still finds its project. The
    caller has checked the epoch with `load_tokens`: a project changed later in the batch is one
    changed after it."""
    project = project_for_token(message.get("token") or "", check_epoch=False)
    if project is None and message.get("project_id"):
        project = project_by_id(message["project_id"])
    return project


def _steps_2_to_5_of_batch(
    messages: list[ReceivedRequest],
    projects: dict[tuple, ProjectInfo | None],
    records: BatchRecords,
    report: BatchReport,
    suppressed: SuppressionCheck,
) -> list[_Normalised]:
    """Steps 2-5 for every event of the batch, its plugin chains one series of calls (`Chains`);
    the events of an unknown project are dropped, an event that fails is dead-lettered."""
    normalised: list[_Normalised] = []
    with Chains() as chains:  # one series of plugin calls for the batch's step 4
        for message in messages:
            project = projects[(message.get("token"), message.get("project_id"))]
            events = message.get("events") or []
            report.received += len(events)
            if project is None:
                report.dropped += len(events)
                logger.warning(
                    "dropping events of an unknown project token",
                    token=str(message.get("token"))[:12] + "...",
                    events=len(events),
                )
                continue
            context = context_of(message)  # the same for every event of the request: its dead letters share it
            for raw in events:
                progress = {"step": "uuid"}
                try:
                    result = _steps_2_to_5(
                        raw, message, project, records, progress, report.chain_costs, suppressed, chains
                    )
                except Exception as exc:
                    if is_outage(exc):
                        raise
                    records.dead_letter(project.id, progress["step"], exc, raw, context)
                    report.dead_lettered += 1
                    continue
                if result is None:
                    report.dropped += 1
                else:
                    normalised.append(_Normalised(message["id"], project, *result, raw, context))
    return normalised


def _steps_2_to_5(
    raw: dict,
    message: ReceivedRequest,
    project: ProjectInfo,
    records: BatchRecords,
    progress: dict,
    costs: dict[int, ChainCost],
    suppressed: SuppressionCheck,
    chains: Chains,
) -> tuple[uuid_module.UUID, dict] | None:
    """Return the event's uuid and the normalised event, or None when it is dropped. `progress`
    names the step."""
    # Step 2: uuid.
    sent_uuid = raw.get("uuid")
    if sent_uuid is None:
        parsed_uuid = uuid_module.uuid4()
        event_uuid = str(parsed_uuid)
    else:
        try:
            event_uuid = canonical_uuid(sent_uuid)
        except ValueError:
            records.warn(project.id, "skipping_event_invalid_uuid", None, {"uuid": str(sent_uuid)[:100]})
            return None
        parsed_uuid = parse_canonical(event_uuid)

    # Step 3: timestamp.
    progress["step"] = "timestamp"
    now = parse_request_time(message["now"])
    timestamp, warnings = resolve_timestamp(raw, now, message.get("sent_at"))
    for type_, details in warnings:
        records.warn(project.id, type_, event_uuid, details)

    # A suppressed distinct id (docs/privacy.md#suppression): dropped and counted, never stored.
    if suppressed.drops(project.id, raw.get("distinct_id")):
        return None

    # The tracking plan, on what the client sent: before plugins add properties of their own.
    progress["step"] = "schema"
    properties = apply_tracking_plan(project.id, raw, event_uuid)

    # Step 4: the plugin chain sees the event as plugins know it.
    progress["step"] = "plugins"
    plugin_event = {
        "uuid": event_uuid,
        "event": raw.get("event"),
        "distinct_id": raw["distinct_id"],
        "team_id": project.id,
        "properties": properties,
        "timestamp": timestamp.isoformat().replace("+00:00", "Z"),
        "ip": message.get("ip"),
        "now": message["now"],
        "sent_at": message.get("sent_at"),
        "$set": raw.get("$set"),
        "$set_once": raw.get("$set_once"),
    }
    started = time.perf_counter()
    chain = chains.run(project.id, plugin_event)
    if chain.succeeded or chain.failed:
        cost = costs.get(project.id) or costs.setdefault(project.id, ChainCost())
        cost.events += 1
        cost.seconds += time.perf_counter() - started
        cost.errors += bool(chain.failed)
    if chain.event is None:
        return None
    out = chain.event
    if out.get("timestamp") != plugin_event["timestamp"]:
        timestamp = parse_iso(out.get("timestamp")) or timestamp

    # Step 5: normalise.
    progress["step"] = "normalise"
    properties = dict(out.get("properties") or {})
    for key in ("$set", "$set_once"):
        if isinstance(out.get(key), dict):
            properties[key] = {**(properties.get(key) or {}), **out[key]}
    if project.anonymize_ips:
        properties.pop("$ip", None)
    elif "$ip" not in properties and message.get("ip"):
        properties["$ip"] = message["ip"]
    if message.get("sent_at"):
        properties["$sent_at"] = message["sent_at"]
    if chain.succeeded:
        properties["$plugins_succeeded"] = chain.succeeded
    if chain.failed:
        properties["$plugins_failed"] = chain.failed
    elements_chain = ""
    if isinstance(properties.get("$elements"), list):
        elements_chain = elements_to_chain(properties.pop("$elements"))
    elif isinstance(properties.get("$elements_chain"), str):
        elements_chain = properties.pop("$elements_chain")
    return parsed_uuid, {
        "uuid": event_uuid,
        "event": str(out.get("event"))[:MAX_EVENT_NAME_LENGTH],
        "distinct_id": str(out.get("distinct_id") or raw["distinct_id"])[:200],
        "properties": properties,
        "timestamp_ms": to_ms(timestamp),
        "elements_chain": elements_chain,
    }


def _step_6_persons(normalised: list[_Normalised], records: BatchRecords) -> list[tuple[_Normalised, EventRow]]:
    by_project: dict[int, list[_Normalised]] = {}
    for item in normalised:
        by_project.setdefault(item.project.id, []).append(item)
    created_at_ms = to_ms(datetime.now(UTC))
    try:  # every project's persons in one round of queries (a failing project falls back on its own)
        resolved = resolve_batch(
            {project_id: [item.event for item in items] for project_id, items in by_project.items()}, records.warn
        )
    except Exception as exc:
        if is_outage(exc):
            raise
        for project_id, items in by_project.items():
            for item in items:
                records.dead_letter(project_id, "persons", exc, item.raw, item.context)
        return []
    rows = []
    for project_id, items in by_project.items():
        persons = resolved[project_id]
        for item, person in zip(items, persons, strict=True):
            if isinstance(person, Exception):  # this event's person handling failed, not the batch's
                records.dead_letter(project_id, "persons", person, item.raw, item.context)
                continue
            person_id, person_properties = person
            event = item.event
            rows.append(
                (
                    item,
                    EventRow(
                        uuid=item.uuid,
                        team_id=project_id,
                        event=event["event"],
                        distinct_id=event["distinct_id"],
                        properties=event["properties"],
                        timestamp_ms=event["timestamp_ms"],
                        created_at_ms=created_at_ms,
                        person_id=person_id,
                        person_properties=person_properties,
                        elements_chain=event["elements_chain"],
                    ),
                )
            )
    return rows


def _step_7_store(
    rows: list[tuple[_Normalised, EventRow]], records: BatchRecords, report: BatchReport, writes: Pipeline
) -> None:
    claims = [dedup.Claim(row.team_id, item.event["uuid"], item.message_id) for item, row in rows]
    decisions = dedup.claim(claims)
    kept = [(item, row, claim) for (item, row), claim, keep in zip(rows, claims, decisions, strict=True) if keep]
    to_insert = [row for _, row, _ in kept]
    report.duplicates = len(rows) - len(to_insert)
    try:
        insert_events(to_insert)
    except Exception as exc:
        if is_outage(exc):
            raise
        kept = _insert_one_by_one(kept, exc, records)
        to_insert = [row for _, row, _ in kept]
    dedup.confirm([claim for _, _, claim in kept], writes)
    report.stored = len(to_insert)
    if to_insert:
        report.latest_timestamp_ms = max(row.timestamp_ms for row in to_insert)
    report.stored_rows = to_insert


def _step_8_dispatch(rows: list[EventRow]) -> None:
    """Stored events to on_event / export_events, built only for projects whose plugins take them."""
    wanted = {team_id for team_id in {row.team_id for row in rows} if wants_stored_events(team_id)}
    if wanted:
        dispatch_stored_events([_stored_event(row) for row in rows if row.team_id in wanted])


def _insert_one_by_one(kept: list, batch_error: Exception, records: BatchRecords) -> list:
    """ClickHouse refused the batch's data itself (not an outage). Find the rows it refuses
    one at a time: store the others, dead-letter those, and release their dedup claims so that
    a replay from the dead-letter store can store them."""
    logger.warning("ClickHouse refused a batch; inserting its rows one by one", error=str(batch_error)[:300])
    stored = []
    for item, row, claim in kept:
        try:
            insert_events([row])
        except Exception as exc:
            if is_outage(exc):
                raise
            records.dead_letter(item.project.id, "store", exc, item.raw, item.context)
            dedup.release([claim])
        else:
            stored.append((item, row, claim))
    return stored


def _stored_event(row: EventRow) -> dict:
    return {
        "uuid": str(row.uuid),
        "team_id": row.team_id,
        "event": row.event,
        "distinct_id": row.distinct_id,
        "properties": row.properties,
        "timestamp": ms_to_iso(row.timestamp_ms),
        "person_id": None if row.person_id.int == 0 else str(row.person_id),
        "person_properties": row.person_properties,
        "elements_chain": row.elements_chain,
    }

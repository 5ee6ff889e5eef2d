"""Export files: gzipped CSV or JSON lines, written one gzip member per committed chunk.

A gzip file may hold several members back to back (RFC 1952); every reader (gunzip, zcat,
Python's gzip) reads them as one stream. Writing each chunk as a complete member means the bytes
up to the last committed offset always form a valid file, so a resumed export truncates the file
to that offset (dropping whatever a killed run wrote after it) and appends the next member.
"""

import csv
import gzip
import io
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import BinaryIO

import orjson

from pipeline.storage.events import NIL_UUID

COLUMNS = (
    "uuid",
    "event",
    "distinct_id",
    "timestamp",
    "created_at",
    "person_id",
    "properties",
    "person_properties",
    "elements_chain",
)
_NIL = str(NIL_UUID)
_DAY_PREFIXES: dict[int, str] = {}


def ms_to_iso(ms: int) -> str:
    """pipeline.storage.events.ms_to_iso, three times faster: exports format two per row, and
    strftime was a third of an export's time. The date part is cached per day."""
    seconds, millis = divmod(ms, 1000)
    day, in_day = divmod(seconds, 86_400)
    prefix = _DAY_PREFIXES.get(day)
    if prefix is None:
        if len(_DAY_PREFIXES) > 10_000:
            _DAY_PREFIXES.clear()
        prefix = _DAY_PREFIXES[day] = datetime.fromtimestamp(day * 86_400, tz=UTC).strftime("%Y-%m-%dT")
    hour, rest = divmod(in_day, 3600)
    minute, second = divmod(rest, 60)
    return f"{prefix}{hour:02d}:{minute:02d}:{second:02d}.{millis:03d}Z"


def _csv_row(row: tuple) -> tuple:
    uuid, event, distinct_id, properties, ts_ms, created_ms, person_id, person_properties, elements_chain = row
    return (
        uuid,
        event,
        distinct_id,
        ms_to_iso(ts_ms),
        ms_to_iso(created_ms),
        "" if person_id == _NIL else person_id,
        properties or "{}",
        person_properties or "{}",
        elements_chain,
    )


def _jsonl_row(row: tuple) -> bytes:
    uuid, event, distinct_id, properties, ts_ms, created_ms, person_id, person_properties, elements_chain = row
    # The stored properties are JSON already: embedded as they are, never parsed and re-encoded.
    return orjson.dumps(
        {
            "uuid": uuid,
            "event": event,
            "distinct_id": distinct_id,
            "timestamp": ms_to_iso(ts_ms),
            "created_at": ms_to_iso(created_ms),
            "person_id": None if person_id == _NIL else person_id,
            "properties": orjson.Fragment(properties or "{}"),
            "person_properties": orjson.Fragment(person_properties or "{}"),
            "elements_chain": elements_chain,
        },
        option=orjson.OPT_APPEND_NEWLINE,
    )


def write_member(
    fileobj: BinaryIO,
    fmt: str,
    rows: Iterable[tuple],
    *,
    header: bool,
    compresslevel: int,
) -> int:
    """Write `rows` as one gzip member at the file's position; the number of rows written.
    The member is complete and on disk (fsync) when this returns."""
    count = 0
    with gzip.GzipFile(fileobj=fileobj, mode="wb", compresslevel=compresslevel, mtime=0) as member:
        if fmt == "csv":
            text = io.TextIOWrapper(member, encoding="utf-8", newline="", write_through=False)
            writer = csv.writer(text, lineterminator="\n")
            if header:
                writer.writerow(COLUMNS)
            for row in rows:
                writer.writerow(_csv_row(row))
                count += 1
            text.flush()
            text.detach()
        elif fmt == "jsonl":
            for row in rows:
                member.write(_jsonl_row(row))
                count += 1
        else:
            raise ValueError(f"unknown export format {fmt!r}; use csv or jsonl")
    fileobj.flush()
    os.fsync(fileobj.fileno())
    return count

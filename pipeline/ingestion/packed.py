"""An ingestion message as the consumer holds it until its batch runs: its body as it came off the
queue, decoded only in the pool process that runs the batch.

The ingestion worker's main process prefetches INGESTION_BATCH_MESSAGES x 2 messages. Decoded, a
bench message of 100 events is about 200 KB of Python objects; its JSON 55 KB; as kombu's Redis
transport brings it (zlib, base64), 7.5 KB. celery-batches' own strategy decodes every message
in the main process and pickles the decoded body to the pool: the prefetched messages, decoded,
took the main process to 199-219 MB on the bench. Celery's protocol 2 leaves decoding to the
pool, and so does this: `pack` keeps the body the transport holds anyway (`PackedRequest`,
pickled to the pool as it is), and `PackedRequest.kwargs` decodes it there.

How many events a message holds (for INGESTION_BATCH_EVENTS) comes from its `EVENTS_HEADER`,
which capture writes (enqueue.py); a message without one (published before it existed, or by
`apply_async`) is decoded once in the main process to count them, and the decoded body not kept.
"""

import base64
from dataclasses import dataclass
from typing import Any

from kombu.compression import decompress
from kombu.message import Message
from kombu.serialization import loads

from pipeline.ingestion.message import EVENTS_HEADER, events_in

_BASE64 = "base64"


@dataclass(slots=True)
class PackedRequest:
    """What the ingestion task gets per message: its id, delivery info and kwargs, like
    celery-batches' SimpleRequest, the kwargs decoded when read (in the pool process)."""

    id: str
    delivery_info: dict[str, Any]
    body: bytes | str
    body_encoding: str | None  # "base64": still as the transport's envelope holds it
    compression: str | None
    content_type: str
    content_encoding: str
    accept: set[str] | None

    @property
    def kwargs(self) -> dict[str, Any]:
        body = self.body
        if self.body_encoding == _BASE64:
            body = base64.b64decode(body)
            if self.compression:
                body = decompress(body, self.compression)
        _args, kwargs, _embed = loads(body, self.content_type, self.content_encoding, accept=self.accept)
        return kwargs


def pack(message: Message) -> tuple[PackedRequest, int]:
    """The request for `message` and how many events it holds. Frees the decompressed body kombu
    made on receipt when the transport's envelope still holds the compressed one: nothing reads
    it once the message is buffered (acknowledging and requeueing go by delivery tag)."""
    raw = getattr(message, "_raw", None)
    envelope_body = raw.get("body") if isinstance(raw, dict) else None
    properties = message.properties or {}
    if isinstance(envelope_body, str) and properties.get("body_encoding") == _BASE64:
        body, body_encoding, compression = envelope_body, _BASE64, message.headers.get("compression")
        message.body = None
    else:
        body, body_encoding, compression = message.body, None, None
    delivery_info = message.delivery_info or {}
    packed = PackedRequest(
        id=message.headers["id"],
        delivery_info={
            "exchange": delivery_info.get("exchange"),
            "routing_key": delivery_info.get("routing_key"),
            "priority": properties.get("priority"),
            "redelivered": delivery_info.get("redelivered", False),
        },
        body=body,
        body_encoding=body_encoding,
        compression=compression,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        accept=message.accept,
    )
    events = message.headers.get(EVENTS_HEADER)
    if not isinstance(events, int):
        events = _events_of(packed)
    return packed, events


def _events_of(packed: PackedRequest) -> int:
    try:
        return events_in(packed.kwargs)
    except Exception:  # the batch logs and drops what cannot be read; here it counts as one
        return 1

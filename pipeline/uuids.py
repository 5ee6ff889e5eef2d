"""UUIDs made and parsed on ingestion's hot path, as `uuid.UUID` objects built directly from their
integer: `UUID(...)` checks its arguments, which for a value known to be a UUID's costs twice the
parse (0.94 us for a canonical string, 0.50 built here; timeit).

`uuid7` makes a new person's uuid: a version 7 UUID (RFC 9562), its first 48 bits the Unix time
in milliseconds and the other 74 free bits random. Persons are keyed by uuid, and half of a
batch's persons can be new. Random (version 4) keys land anywhere in the primary key's B-tree, so
with millions of persons each insert touches a page that is rarely in PostgreSQL's buffers; keys
that grow with time land together at the tree's right edge. Two persons made in the same
millisecond differ in their 74 random bits, as two version 4 UUIDs differ in their 122. A batch
makes thousands, inside its persons lock (pipeline/persons/store.py): the random bits come from
the operating system a few hundred uuids' worth at a time, and the pool is dropped in a forked
child (the prefork pool's processes), which would otherwise hand out its parent's bits.
"""

import os
import time
from uuid import UUID, SafeUUID

_RANDOM_BITS = (1 << 80) - 1 & ~(0xF << 76) & ~(0b11 << 62)  # all but the version and variant
_VERSION_7 = 0x7 << 76
_VARIANT_RFC = 0b10 << 62
_RANDOM_BYTES = 10
_POOL_UUIDS = 256

_new = object.__new__
_set = object.__setattr__
_UNKNOWN = SafeUUID.unknown

_pool = b""
_taken = 0


def from_int(value: int) -> UUID:
    """The UUID whose 128 bits are `value`, which the caller knows to be in range."""
    made = _new(UUID)
    _set(made, "int", value)
    _set(made, "is_safe", _UNKNOWN)
    return made


def parse_canonical(text: str) -> UUID:
    """The UUID of a canonical string (pipeline/ingestion/message.py `canonical_uuid`)."""
    return from_int(int(text.replace("-", ""), 16))


def uuid7() -> UUID:
    global _pool, _taken
    if _taken >= len(_pool):
        _pool, _taken = os.urandom(_RANDOM_BYTES * _POOL_UUIDS), 0
    random = int.from_bytes(_pool[_taken : _taken + _RANDOM_BYTES]) & _RANDOM_BITS
    _taken += _RANDOM_BYTES
    return from_int(time.time_ns() // 1_000_000 << 80 | _VERSION_7 | _VARIANT_RFC | random)


def _forget_pool() -> None:
    global _pool, _taken
    _pool, _taken = b"", 0


os.register_at_fork(after_in_child=_forget_pool)

"""A new person's uuid: a version 7 UUID (RFC 9562), its first 48 bits the Unix time in
milliseconds and the other 74 free bits random.

Persons are keyed by uuid, and half of a batch's persons can be new. Random (version 4) keys land
anywhere in the primary key's B-tree, so with millions of persons each insert touches a page that
is rarely in PostgreSQL's buffers; keys that grow with time land together at the tree's right
edge. Two persons made in the same millisecond differ in their 74 random bits, as two version 4
UUIDs differ in their 122.
"""

import os
import time
from uuid import UUID

_RANDOM_BITS = (1 << 80) - 1 & ~(0xF << 76) & ~(0b11 << 62)  # all but the version and variant
_VERSION_7 = 0x7 << 76
_VARIANT_RFC = 0b10 << 62


def uuid7() -> UUID:
    millis = time.time_ns() // 1_000_000
    random = int.from_bytes(os.urandom(10), "big") & _RANDOM_BITS
    return UUID(int=millis << 80 | _VERSION_7 | _VARIANT_RFC | random)

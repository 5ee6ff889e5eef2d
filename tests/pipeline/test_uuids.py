"""pipeline/uuids.py: new persons' version 7 uuids (time first, then random), and UUIDs built from
their integer or canonical string."""

import os
import pickle
import time
from uuid import RFC_4122, UUID, uuid4

from pipeline.uuids import from_int, parse_canonical, uuid7

RANDOM_BITS = 0xFFF << 64 | (1 << 62) - 1  # rand_a and rand_b: all but the time, version and variant


def test_a_uuid7_starts_with_the_time_and_keeps_version_and_variant():
    before = time.time_ns() // 1_000_000
    made = [uuid7() for _ in range(1_000)]
    after = time.time_ns() // 1_000_000

    assert len(set(made)) == len(made)
    for uuid in made:
        assert uuid.version == 7
        assert uuid.variant == RFC_4122
        assert before <= uuid.int >> 80 <= after
    later = uuid7()
    time.sleep(0.002)
    assert uuid7() > later  # a later millisecond sorts after


def test_a_forked_child_does_not_reuse_its_parents_random_bits():
    uuid7()  # the parent's pool holds the bits of its next uuids
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child's result is checked by the parent)
        os.write(write_end, uuid7().bytes)
        os._exit(0)
    os.waitpid(child, 0)
    childs = UUID(bytes=os.read(read_end, 16))
    os.close(read_end)
    os.close(write_end)

    parents = uuid7()
    assert childs.int & RANDOM_BITS != parents.int & RANDOM_BITS


def test_uuids_past_one_pool_of_random_bits_stay_unique():
    made = [uuid7() for _ in range(3 * 256 + 7)]
    assert len({uuid.int & RANDOM_BITS for uuid in made}) == len(made)
    assert all(uuid == UUID(str(uuid)) and uuid.version == 7 for uuid in made)


def test_a_uuid_built_from_its_int_or_canonical_string_is_the_standard_librarys():
    for made in [uuid4() for _ in range(100)] + [UUID(int=0), UUID(int=(1 << 128) - 1)]:
        for ours in (from_int(made.int), parse_canonical(str(made))):
            assert ours == made and hash(ours) == hash(made)
            assert (str(ours), ours.hex, ours.version, ours.bytes) == (str(made), made.hex, made.version, made.bytes)
            assert pickle.loads(pickle.dumps(ours)) == made  # noqa: S301 (our own bytes)

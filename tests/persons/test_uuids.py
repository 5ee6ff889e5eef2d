"""New persons get version 7 uuids (pipeline/persons/uuids.py): time first, then random."""

import time
from uuid import RFC_4122

from pipeline.persons.uuids import uuid7


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

"""Event uuids as stored (pipeline/ingestion/message.py canonical_uuid): every spelling a uuid
parser takes becomes lower-case 8-4-4-4-12; anything else is refused."""

import pytest

from pipeline.ingestion.message import canonical_uuid

CANONICAL = "0191c5a0-3b2e-7c4d-8e5f-a0b1c2d3e4f5"


@pytest.mark.parametrize(
    "sent",
    [
        CANONICAL,
        CANONICAL.upper(),
        CANONICAL.replace("-", ""),
        "{" + CANONICAL + "}",
        "urn:uuid:" + CANONICAL,
    ],
)
def test_every_spelling_becomes_the_canonical_one(sent):
    assert canonical_uuid(sent) == CANONICAL


@pytest.mark.parametrize(
    "sent", ["", "not-a-uuid", CANONICAL[:-1], CANONICAL + "0", 12345, CANONICAL.replace("-", "_")]
)
def test_what_is_not_a_uuid_is_refused(sent):
    with pytest.raises(ValueError):
        canonical_uuid(sent)

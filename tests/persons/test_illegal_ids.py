import pytest

from pipeline.persons.illegal_ids import is_illegal_distinct_id


@pytest.mark.parametrize(
    "distinct_id",
    [
        "anonymous",
        "Anonymous",
        "GUEST",
        "distinctid",
        "Distinct_Id",
        "id",
        "not_authenticated",
        "EMAIL",
        "undefined",
        "True",
        "false",
        "[object Object]",
        "NaN",
        "None",
        "none",
        "null",
        "0",
        '"anonymous"',
        "'Guest'",
        '"null"',
        "'0'",
        '"[object Object]"',
        "",
        "   ",
        "\t\n",
    ],
)
def test_illegal(distinct_id):
    assert is_illegal_distinct_id(distinct_id)


@pytest.mark.parametrize(
    "distinct_id",
    ["user-1", "NULL", "NONE", "nan", "[object object]", "00", "1", " 0", "'0", "anonymous-42", "guest@example.com"],
)
def test_legal(distinct_id):
    assert not is_illegal_distinct_id(distinct_id)

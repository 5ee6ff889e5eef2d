"""Distinct ids that SDKs and integrations send by mistake: they never take part in a merge.

Merging on one of these would fold every user that sent it into a single person (every logged-out
visitor is `anonymous`, every broken template sends `undefined`), so docs/contracts.md#persons refuses it.
"""

_CASE_INSENSITIVE = (
    "anonymous",
    "guest",
    "distinctid",
    "distinct_id",
    "id",
    "not_authenticated",
    "email",
    "undefined",
    "true",
    "false",
)
_CASE_SENSITIVE = ("[object Object]", "NaN", "None", "none", "null", "0")


def _with_quoted(ids: tuple[str, ...]) -> frozenset[str]:
    return frozenset(ids) | {f'"{id_}"' for id_ in ids} | {f"'{id_}'" for id_ in ids}


ILLEGAL_CASE_INSENSITIVE = _with_quoted(_CASE_INSENSITIVE)
ILLEGAL_CASE_SENSITIVE = _with_quoted(_CASE_SENSITIVE)


def is_illegal_distinct_id(distinct_id: str) -> bool:
    """True for a blank id, a listed id in any case, or a listed case-sensitive id exactly."""
    return (
        not distinct_id.strip()
        or distinct_id.lower() in ILLEGAL_CASE_INSENSITIVE
        or distinct_id in ILLEGAL_CASE_SENSITIVE
    )

"""Percentiles and the median-of-runs summary every figure in the results goes through."""

import math
import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (the smallest value with at least p% of the values at or below it)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def latency_summary(latencies_ms: Sequence[float]) -> dict[str, float | None]:
    ordered = sorted(latencies_ms)
    return {f"p{p}_ms": _round(percentile(ordered, p)) for p in (50, 95, 99)} | {
        "max_ms": _round(ordered[-1] if ordered else None)
    }


def spread(values: Sequence[float | None]) -> dict:
    """Median, min and max of one figure over the runs (runs that produced nothing are skipped)."""
    present = [v for v in values if v is not None]
    if not present:
        return {"median": None, "min": None, "max": None, "values": list(values)}
    return {
        "median": _round(statistics.median(present)),
        "min": _round(min(present)),
        "max": _round(max(present)),
        "values": [_round(v) for v in values],
    }


def _round(value: float | None) -> float | None:
    if value is None:
        return None
    return round(value, 3) if abs(value) < 100 else round(value, 1)

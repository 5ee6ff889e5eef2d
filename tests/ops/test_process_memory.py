"""What every bklog process leaves out of its memory (docs/performance.md#memory)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import bklog_app, django
django.setup()
import pipeline.storage.events
from clickhouse_driver.columns.datecolumn import DateColumn
print(type(DateColumn.date_lut).__name__, len(DateColumn.date_lut))
"""


def test_the_clickhouse_driver_date_tables_are_filled_only_as_dates_are_met():
    env = {k: v for k, v in os.environ.items() if k != "CLICKHOUSE_DRIVER_LASY_DATE_LUT"}
    env["DJANGO_SETTINGS_MODULE"] = "bklog_app.settings"
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    kind, size = result.stdout.split()
    assert kind == "LazyLUT"
    assert int(size) < 10  # not the 146,000 dates of 1900 to 2299 the driver builds by default

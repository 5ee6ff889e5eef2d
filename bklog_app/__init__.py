import os

# clickhouse-driver builds two dicts of every date from 1900 to 2299 when it is imported, 19 MB in
# every process; bklog stores no Date column, so it fills them only as dates are met (the
# driver's own switch, spelled as the driver spells it). Set before anything imports the driver.
os.environ.setdefault("CLICKHOUSE_DRIVER_LASY_DATE_LUT", "1970-01-01:1970-01-01")

from bklog_app.celery import app as celery_app  # after the switch above

__all__ = ["celery_app"]

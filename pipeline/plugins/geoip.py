"""`meta.geoip.locate(ip)`: a MaxMind City record from GEOIP_DATABASE_PATH, or None."""

import io
import ipaddress
from functools import lru_cache

import maxminddb
import structlog
from django.conf import settings

logger = structlog.get_logger(__name__)


@lru_cache(maxsize=4)
def _reader(path: str) -> maxminddb.Reader | None:
    if not path:
        return None
    try:
        return maxminddb.open_database(path)
    except (OSError, maxminddb.InvalidDatabaseError) as exc:
        logger.error(
            "cannot open the GeoIP database; set GEOIP_DATABASE_PATH to a MaxMind City .mmdb", path=path, error=str(exc)
        )
        return None


class GeoIP:
    def __init__(self, path: str | None = None):
        self._path = path
        self._own: maxminddb.Reader | None = None

    @classmethod
    def from_bytes(cls, contents: bytes) -> "GeoIP":
        """A lookup on a database given as bytes (an uploaded attachment)."""
        geoip = cls()
        try:
            geoip._own = maxminddb.open_database(io.BytesIO(contents), mode=maxminddb.MODE_FD)
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
            raise ValueError(f"not a MaxMind database: {exc}") from None
        return geoip

    @property
    def available(self) -> bool:
        return self._reader() is not None

    def _reader(self) -> maxminddb.Reader | None:
        if self._own is not None:
            return self._own
        return _reader(self._path if self._path is not None else settings.GEOIP_DATABASE_PATH)

    def locate(self, ip: str | None) -> dict | None:
        """The City record for `ip` (city, country, continent, location, subdivisions, postal...)."""
        reader = self._reader()
        if reader is None or not ip:
            return None
        try:
            ipaddress.ip_address(str(ip).strip())
            record = reader.get(str(ip).strip())
        except ValueError:
            return None
        return record if isinstance(record, dict) else None


def forget_readers() -> None:
    _reader.cache_clear()

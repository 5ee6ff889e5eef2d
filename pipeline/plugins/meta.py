"""`meta`, the second argument of every plugin method (docs/contracts.md#plugin-api).

Two flavours: the live one, and the dry-run one of a test run, which reads what exists but
writes nothing anywhere (storage and cache changes stay in memory, jobs are only logged).
"""

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from bklog_app.plugins.models import PluginStorage
from pipeline.plugins.geoip import GeoIP
from pipeline.plugins.job_queue import schedule_job
from pipeline.plugins.logs import LogSink
from pipeline.redis import get_redis

MAX_LPUSH_VALUES = 1000
CACHE_PREFIX = "plugin-cache"

TIME_UNITS = {
    "millisecond": 0.001,
    "second": 1,
    "minute": 60,
    "hour": 3600,
    "day": 86400,
    "week": 7 * 86400,
}


def cache_key(plugin_id: int, project_id: int, key: str) -> str:
    """The Redis key behind `meta.cache` key `key` of this plugin in this project."""
    return f"{CACHE_PREFIX}:{plugin_id}:{project_id}:{key}"


def _encode(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _decode(raw: bytes | str | None, default: Any = None) -> Any:
    if raw is None:
        return default
    text = raw.decode() if isinstance(raw, bytes) else raw
    try:
        return json.loads(text)
    except ValueError:
        return text


# --- storage -----------------------------------------------------------------------------


class Storage:
    """`meta.storage`: JSON values per plugin config, in the database."""

    def __init__(self, plugin_config_id: int):
        self._config_id = plugin_config_id

    def get(self, key: str, default: Any = None) -> Any:
        row = PluginStorage.objects.filter(plugin_config_id=self._config_id, key=str(key)).values_list("value").first()
        return default if row is None or row[0] is None else row[0]

    def set(self, key: str, value: Any) -> None:
        if value is None:
            self.delete(key)
            return
        _encode(value)  # a value that is not JSON fails here, with the plugin's key in the traceback
        PluginStorage.objects.update_or_create(
            plugin_config_id=self._config_id, key=str(key), defaults={"value": value}
        )

    def delete(self, key: str) -> None:
        PluginStorage.objects.filter(plugin_config_id=self._config_id, key=str(key)).delete()


class DryRunStorage(Storage):
    """Reads the real storage; writes stay in this object."""

    _DELETED = object()

    def __init__(self, plugin_config_id: int):
        super().__init__(plugin_config_id)
        self._overlay: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        if str(key) in self._overlay:
            value = self._overlay[str(key)]
            return default if value is self._DELETED else value
        return super().get(key, default)

    def set(self, key: str, value: Any) -> None:
        if value is None:
            self.delete(key)
            return
        self._overlay[str(key)] = json.loads(_encode(value))

    def delete(self, key: str) -> None:
        self._overlay[str(key)] = self._DELETED


# --- cache -------------------------------------------------------------------------------


class Cache:
    """`meta.cache`: Redis, keyed per plugin and project. Values are JSON."""

    def __init__(self, plugin_id: int, project_id: int):
        self._plugin_id, self._project_id = plugin_id, project_id

    def _key(self, key: str) -> str:
        return cache_key(self._plugin_id, self._project_id, str(key))

    @property
    def _redis(self):
        return get_redis()

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        if ttl:
            self._redis.set(self._key(key), _encode(value), px=int(float(ttl) * 1000))
        else:
            self._redis.set(self._key(key), _encode(value))

    def get(self, key: str, default: Any = None) -> Any:
        return _decode(self._redis.get(self._key(key)), default)

    def delete(self, key: str) -> None:
        self._redis.delete(self._key(key))

    def incr(self, key: str) -> int:
        return int(self._redis.incr(self._key(key)))

    def expire(self, key: str, ttl: float) -> bool:
        return bool(self._redis.pexpire(self._key(key), int(float(ttl) * 1000)))

    def lpush(self, key: str, values: list) -> int:
        values = _check_push(values)
        return int(self._redis.lpush(self._key(key), *[_encode(v) for v in values])) if values else self.llen(key)

    def lrange(self, key: str, start: int, stop: int) -> list:
        return [_decode(v) for v in self._redis.lrange(self._key(key), int(start), int(stop))]

    def llen(self, key: str) -> int:
        return int(self._redis.llen(self._key(key)))

    def lrem(self, key: str, count: int, value: Any) -> int:
        return int(self._redis.lrem(self._key(key), int(count), _encode(value)))

    def lpop(self, key: str, count: int = 1) -> list:
        popped = self._redis.lpop(self._key(key), int(count))
        return [_decode(v) for v in (popped or [])]


def _check_push(values: Any) -> list:
    if not isinstance(values, list | tuple):
        values = [values]
    if len(values) > MAX_LPUSH_VALUES:
        raise ValueError(f"meta.cache.lpush takes at most {MAX_LPUSH_VALUES} values per call; split the list")
    return list(values)


class DryRunCache:
    """The same interface on a dict: a test run leaves Redis untouched. TTLs are ignored."""

    def __init__(self):
        self._data: dict[str, Any] = {}

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        self._data[str(key)] = json.loads(_encode(value))

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(str(key), default)

    def delete(self, key: str) -> None:
        self._data.pop(str(key), None)

    def incr(self, key: str) -> int:
        self._data[str(key)] = int(self._data.get(str(key), 0)) + 1
        return self._data[str(key)]

    def expire(self, key: str, ttl: float) -> bool:
        return str(key) in self._data

    def lpush(self, key: str, values: list) -> int:
        values = _check_push(values)
        items = self._data.setdefault(str(key), [])
        for value in values:
            items.insert(0, json.loads(_encode(value)))
        return len(items)

    def lrange(self, key: str, start: int, stop: int) -> list:
        items = self._data.get(str(key), [])
        stop = len(items) if stop == -1 else stop + 1
        return items[start:stop]

    def llen(self, key: str) -> int:
        return len(self._data.get(str(key), []))

    def lrem(self, key: str, count: int, value: Any) -> int:
        items = self._data.get(str(key), [])
        kept = [item for item in items if item != value]
        removed = len(items) - len(kept)
        self._data[str(key)] = kept
        return removed

    def lpop(self, key: str, count: int = 1) -> list:
        items = self._data.get(str(key), [])
        popped, self._data[str(key)] = items[:count], items[count:]
        return popped


# --- jobs --------------------------------------------------------------------------------


def delay_seconds(amount: float, unit: str) -> float:
    """`run_in(3, "minutes")`: units from milliseconds through weeks, singular or plural."""
    name = str(unit).lower().rstrip("s")
    if name not in TIME_UNITS:
        raise ValueError(f"unknown time unit {unit!r}; use one of {', '.join(u + 's' for u in TIME_UNITS)}")
    if isinstance(amount, bool) or not isinstance(amount, int | float) or amount < 0:
        raise ValueError("run_in needs a number of units of 0 or more")
    return float(amount) * TIME_UNITS[name]


class JobRequest:
    def __init__(self, jobs: "Jobs", name: str, payload: dict):
        self._jobs, self._name, self._payload = jobs, name, payload

    def run_now(self) -> None:
        self._jobs._schedule(self._name, self._payload, datetime.now(UTC))

    def run_in(self, amount: float, unit: str) -> None:
        self._jobs._schedule(
            self._name, self._payload, datetime.now(UTC) + timedelta(seconds=delay_seconds(amount, unit))
        )

    def run_at(self, when: datetime) -> None:
        if not isinstance(when, datetime):
            raise TypeError("run_at needs a datetime")
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        self._jobs._schedule(self._name, self._payload, when)


class Jobs:
    """`meta.jobs.<name>(payload)` -> a request with `run_now()`, `run_in(n, unit)`, `run_at(dt)`."""

    def __init__(self, plugin_config_id: int, names: list[str], sink: LogSink, dry_run: bool = False):
        self._config_id, self._names, self._sink, self._dry_run = plugin_config_id, list(names), sink, dry_run

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in self.__dict__.get("_names", ()):
            known = ", ".join(self.__dict__.get("_names", ())) or "none"
            raise AttributeError(f"this plugin has no job {name!r} (jobs defined in `jobs`: {known})")

        def request(payload: dict | None = None) -> JobRequest:
            if payload is not None and not isinstance(payload, dict):
                raise TypeError("a job payload is a dict")
            return JobRequest(self, name, payload or {})

        return request

    def _schedule(self, name: str, payload: dict, run_at: datetime) -> None:
        if self._dry_run:
            self._sink.system("INFO", f"test run: job {name!r} would run at {run_at.isoformat()} with {payload!r}")
            return
        schedule_job(self._config_id, name, json.loads(_encode(payload)), run_at)


# --- logger ------------------------------------------------------------------------------


class Logger:
    """`meta.logger`: PLUGIN log entries of this config."""

    def __init__(self, sink: LogSink):
        self._sink = sink

    def debug(self, *parts: Any) -> None:
        self._sink.add("PLUGIN", "DEBUG", " ".join(str(p) for p in parts))

    def info(self, *parts: Any) -> None:
        self._sink.add("PLUGIN", "INFO", " ".join(str(p) for p in parts))

    log = info

    def warning(self, *parts: Any) -> None:
        self._sink.add("PLUGIN", "WARN", " ".join(str(p) for p in parts))

    warn = warning

    def error(self, *parts: Any) -> None:
        self._sink.add("PLUGIN", "ERROR", " ".join(str(p) for p in parts))


# --- meta --------------------------------------------------------------------------------


class Meta:
    """One config's `meta`. Slotted, and `storage`, `cache`, `jobs`, `geoip` and `logger` are
    made on first use: a worker holds one per config it has run, most of which never touch them."""

    __slots__ = (
        "_cache",
        "_geoip",
        "_job_names",
        "_jobs",
        "_logger",
        "_sink",
        "_storage",
        "attachments",
        "config",
        "dry_run",
        "instance_id",
        "plugin_config_id",
        "plugin_id",
        "project_id",
        "state",
    )

    def __init__(
        self,
        *,
        plugin_id: int,
        plugin_config_id: int,
        project_id: int,
        instance_id: str,
        config: dict,
        attachments: Mapping[str, dict],
        job_names: Sequence[str],
        sink: LogSink,
        dry_run: bool = False,
    ):
        self.plugin_id = plugin_id
        self.plugin_config_id = plugin_config_id
        self.project_id = project_id
        self.instance_id = instance_id
        self.config = config
        self.state: dict = {}
        self.attachments = attachments
        self.dry_run = dry_run
        self._job_names = job_names
        self._sink = sink
        self._storage = self._cache = self._jobs = self._geoip = self._logger = None

    @property
    def storage(self) -> Storage:
        if self._storage is None:
            self._storage = DryRunStorage(self.plugin_config_id) if self.dry_run else Storage(self.plugin_config_id)
        return self._storage

    @property
    def cache(self) -> Cache | DryRunCache:
        if self._cache is None:
            self._cache = DryRunCache() if self.dry_run else Cache(self.plugin_id, self.project_id)
        return self._cache

    @property
    def jobs(self) -> Jobs:
        if self._jobs is None:
            self._jobs = Jobs(self.plugin_config_id, self._job_names, self._sink, dry_run=self.dry_run)
        return self._jobs

    @property
    def geoip(self) -> GeoIP:
        if self._geoip is None:
            self._geoip = GeoIP()
        return self._geoip

    @property
    def logger(self) -> Logger:
        if self._logger is None:
            self._logger = Logger(self._sink)
        return self._logger

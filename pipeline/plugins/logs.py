"""Plugin log entries (docs/contracts.md#plugin-api): SYSTEM / PLUGIN / CONSOLE, DEBUG / INFO / WARN / ERROR.

A `LogSink` gathers the entries of one plugin call and writes them in one INSERT when the call
ends (`flush`); a dry-run sink (the test run) only keeps them. `print()` inside a call reaches
the sink of that call through a context variable, whichever thread or plugin source it is.

What a plugin logs (PLUGIN and CONSOLE entries) is limited per call, until the next `flush`:
PLUGIN_LOG_MAX_ENTRIES_PER_CALL entries and PLUGIN_LOG_MAX_CHARS_PER_CALL characters. Past either,
one WARN entry says so and the call's further lines are dropped. The runtime's own SYSTEM entries
(the call's error, above all) are always kept.
"""

import io
import sys
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog
from django.conf import settings
from RestrictedPython import PrintCollector

from bklog_app.plugins.models import PluginLogEntry

MAX_MESSAGE_LENGTH = 50_000

logger = structlog.get_logger(__name__)


@dataclass
class LogLine:
    timestamp: datetime
    source: str
    type: str
    message: str
    instance_id: str

    def as_dict(self) -> dict:
        return {
            "timestamp": self.timestamp.isoformat().replace("+00:00", "Z"),
            "source": self.source,
            "type": self.type,
            "message": self.message,
            "instance_id": self.instance_id,
        }


@dataclass(slots=True)
class LogSink:
    plugin_config_id: int | None
    project_id: int
    instance_id: str
    persist: bool = True
    lines: list[LogLine] = field(default_factory=list)
    entries_this_call: int = 0
    chars_this_call: int = 0
    dropped_this_call: int = 0

    def add(self, source: str, type_: str, message: object) -> None:
        if self.dropped_this_call and source != "SYSTEM":
            self.dropped_this_call += 1
            return
        text = str(message)
        if len(text) > MAX_MESSAGE_LENGTH:
            text = text[: MAX_MESSAGE_LENGTH - 20] + "... (message cut)"
        if source != "SYSTEM" and not self._within_limits(text):
            return
        self.lines.append(LogLine(datetime.now(UTC), source, type_, text, self.instance_id))

    def _within_limits(self, text: str) -> bool:
        self.entries_this_call += 1
        self.chars_this_call += len(text)
        max_entries, max_chars = settings.PLUGIN_LOG_MAX_ENTRIES_PER_CALL, settings.PLUGIN_LOG_MAX_CHARS_PER_CALL
        over_entries = 0 < max_entries < self.entries_this_call
        over_chars = 0 < max_chars < self.chars_this_call
        if not (over_entries or over_chars):
            return True
        self.dropped_this_call = 1
        limit = (
            f"{max_entries} entries (PLUGIN_LOG_MAX_ENTRIES_PER_CALL)"
            if over_entries
            else f"{max_chars} characters (PLUGIN_LOG_MAX_CHARS_PER_CALL)"
        )
        self.system("WARN", f"this call logged more than {limit}: its further log lines are dropped")
        return False

    def gathered(self) -> bool:
        """Whether `flush` has anything to do: lines to store, or a call's counts to reset."""
        return bool(self.lines or self.entries_this_call or self.dropped_this_call)

    def system(self, type_: str, message: object) -> None:
        self.add("SYSTEM", type_, message)

    def flush(self) -> None:
        """Store what was gathered (persisting sinks only) and start over."""
        if self.dropped_this_call:
            logger.warning(
                "plugin log lines dropped", plugin_config_id=self.plugin_config_id, lines=self.dropped_this_call
            )
        self.entries_this_call = self.chars_this_call = self.dropped_this_call = 0
        if not self.lines or not self.persist or self.plugin_config_id is None:
            return
        lines, self.lines = self.lines, []
        PluginLogEntry.objects.bulk_create(
            [
                PluginLogEntry(
                    plugin_config_id=self.plugin_config_id,
                    project_id=self.project_id,
                    timestamp=line.timestamp,
                    source=line.source,
                    type=line.type,
                    message=line.message,
                    instance_id=line.instance_id,
                )
                for line in lines
            ]
        )


_current_sink: ContextVar[LogSink | None] = ContextVar("plugin_log_sink", default=None)


def capture_into(sink: LogSink) -> Token:
    """Route `print()` to `sink` from here, until `end_capture` is given the returned token: for
    code that makes many calls in a row (registry.PluginCalls), where `capturing`'s object per call
    would be most of the cost."""
    return _current_sink.set(sink)


def end_capture(token: Token) -> None:
    _current_sink.reset(token)


class capturing:
    """Route `print()` during a plugin call to `sink` as CONSOLE entries. A class rather than a
    generator-based context manager: it wraps every plugin call, twice per event for a
    two-plugin chain, and this costs a fraction of the generator's set-up."""

    __slots__ = ("sink", "token")

    def __init__(self, sink: LogSink) -> None:
        self.sink = sink

    def __enter__(self) -> None:
        self.token = _current_sink.set(self.sink)

    def __exit__(self, *_exc) -> None:
        _current_sink.reset(self.token)


def _console_write(text: str, buffer: list[str]) -> None:
    buffer.append(text)
    joined = "".join(buffer)
    if "\n" not in joined:
        return
    *complete, rest = joined.split("\n")
    buffer[:] = [rest] if rest else []
    sink = _current_sink.get()
    for line in complete:
        if sink is not None:
            sink.add("CONSOLE", "INFO", line)


class ConsolePrint(PrintCollector):
    """RestrictedPython's `_print_` for source plugins: each printed line is a CONSOLE entry."""

    def __init__(self, _getattr_=None):
        super().__init__(_getattr_)
        self._buffer: list[str] = []

    def write(self, text: str) -> None:
        _console_write(text, self._buffer)


class _StdoutRouter(io.TextIOBase):
    """Installed once as sys.stdout: inside a plugin call, lines go to that call's sink."""

    def __init__(self, original):
        self._original = original
        self._buffers: dict[int, list[str]] = {}

    def write(self, text: str) -> int:
        sink = _current_sink.get()
        if sink is None:
            return self._original.write(text)
        _console_write(text, self._buffers.setdefault(id(sink), []))
        if len(self._buffers) > 1000:
            self._buffers.clear()
        return len(text)

    def flush(self) -> None:
        self._original.flush()

    def __getattr__(self, name):
        return getattr(self._original, name)


def route_stdout() -> None:
    """Make `print()` in trusted (built-in, local) plugins land in their CONSOLE log."""
    if not isinstance(sys.stdout, _StdoutRouter):
        sys.stdout = _StdoutRouter(sys.stdout)

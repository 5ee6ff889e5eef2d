"""Ingestion step 4: the project's plugin chain, each `process_event` fed the previous output.

This is the extension point the ingestion batch calls; the plugin runtime fills it in.
"""

from dataclasses import dataclass, field


@dataclass
class ChainResult:
    event: dict | None  # None: a plugin dropped the event
    succeeded: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def run_process_event_chain(project_id: int, event: dict) -> ChainResult:
    return ChainResult(event=event)

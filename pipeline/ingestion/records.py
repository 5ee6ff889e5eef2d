"""Ingestion warnings and dead letters, collected during a batch and written together."""

from dataclasses import dataclass, field

import structlog

from bklog_app.models import DeadLetter, IngestionWarning
from pipeline.deadletters.record import EVENT_KIND, error_text

logger = structlog.get_logger(__name__)


@dataclass
class BatchRecords:
    warnings: list[IngestionWarning] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)

    def warn(self, project_id: int, type_: str, event_uuid: str | None, details: dict) -> None:
        self.warnings.append(
            IngestionWarning(project_id=project_id, type=type_, event_uuid=event_uuid or "", details=details)
        )

    def dead_letter(self, project_id: int | None, step: str, error: BaseException, payload, context: dict) -> None:
        text = error_text(error)
        logger.warning(
            "event dead-lettered; replay it from the dead-letter store once the cause is fixed",
            step=step,
            error=text.splitlines()[0][:300],
            project_id=project_id,
        )
        self.dead_letters.append(
            DeadLetter(project_id=project_id, kind=EVENT_KIND, step=step, error=text, payload=payload, context=context)
        )

    def save(self) -> None:
        if self.warnings:
            IngestionWarning.objects.bulk_create(self.warnings, batch_size=500)
        if self.dead_letters:
            DeadLetter.objects.bulk_create(self.dead_letters, batch_size=500)

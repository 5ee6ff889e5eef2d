"""Where export files live (under EXPORTS_DIR) and how a resumed run reopens one."""

import contextlib
from pathlib import Path
from typing import BinaryIO

from django.conf import settings


def file_name_for(export_id: int, project_id: int, fmt: str) -> str:
    """The file's name relative to EXPORTS_DIR (stored on the job, so the folder may move)."""
    return f"{project_id}/export-{export_id}.{fmt}.gz"


def path_for(file_name: str) -> Path:
    return Path(settings.EXPORTS_DIR) / file_name


def open_at(path: Path, committed: int) -> tuple[BinaryIO, bool]:
    """Open the file to append after its first `committed` bytes, cutting off anything after
    them (what a killed run wrote after its last commit). Returns (file, started_over): when the
    file is gone or shorter than `committed`, it is started again, empty, and the export must
    start again from the beginning of its range."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        size = None
    if size is None or size < committed:
        return open(path, "wb"), committed > 0
    fileobj = open(path, "r+b")  # noqa: SIM115 - the caller closes it
    fileobj.truncate(committed)
    fileobj.seek(committed)
    return fileobj, False


def remove(file_name: str) -> None:
    if file_name:
        with contextlib.suppress(FileNotFoundError):
            path_for(file_name).unlink()

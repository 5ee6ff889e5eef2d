"""The requester hears of a failed export by email (Django's email backend; console by default)."""

import structlog
from django.conf import settings
from django.core.mail import send_mail

logger = structlog.get_logger(__name__)


def notify_failure(job, what: str, resume_path: str) -> bool:
    """Email the export's requester why it failed and how to resume it; True if a mail went out.

    A mail that cannot be sent is logged, never raised: the export's failure is already stored.
    """
    user = job.requested_by
    if user is None or not user.email:
        logger.info("export failed; its requester has no email address", export_id=job.pk, what=what)
        return False
    subject = f"bklog: {what} {job.pk} of project {job.project.name} failed"
    body = (
        f"Your {what} {job.pk} (project {job.project.name}, events from {job.after.isoformat()} "
        f"to {job.before.isoformat()}) failed after {job.rows_exported} rows:\n\n"
        f"    {job.error}\n\n"
        f"Once the cause is fixed, resume it with POST {resume_path}: it carries on from its last "
        f"committed chunk.\n"
    )
    try:
        send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, [user.email])
    except Exception:
        logger.exception("could not email the requester of a failed export", export_id=job.pk)
        return False
    return True

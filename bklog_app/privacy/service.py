"""What users do to persons' data (the API and the admin both call these): delete a person,
delete events by filter, confirm a dry run, suppress and lift suppressions.

The database side happens at once, in the caller's transaction; event deletion is queued to a
worker once the request's row is committed (pipeline/privacy/deletion.py).
"""

from django.db import IntegrityError, transaction
from django.utils import timezone

from bklog_app.models import Project
from bklog_app.persons.models import Person, PersonDistinctId, PersonOverride
from bklog_app.privacy.models import DeletionRequest, DeletionStatus, Suppression
from pipeline.celery_tasks import send
from pipeline.privacy import deletion, suppression
from pipeline.queues import TaskName


class PersonGone(Exception):
    """The person was deleted (or merged away) meanwhile."""


def enqueue(request: DeletionRequest) -> None:
    project_id = request.project_id
    transaction.on_commit(lambda: send(TaskName.RUN_DELETIONS, project_id))


@transaction.atomic
def delete_person(
    project: Project, person_uuid, user=None, *, delete_events: bool = False, suppress: bool = False
) -> DeletionRequest | None:
    """Delete the person, its distinct ids and the overrides that point at it, at once; with
    `delete_events`, queue the deletion of its events (returned); with `suppress`, suppress its
    distinct ids. Its events are those of its distinct ids and those stored with its person_id
    or the person_id of a person merged into it (events keep the person_id they were stored with)."""
    # Lock the person row before its distinct ids go, in the order ingestion locks them, so a
    # delete racing a merge of this person cannot deadlock with it.
    person = Person.objects.select_for_update().filter(project=project, uuid=person_uuid).first()
    if person is None:
        raise PersonGone("No such person in this project.")
    distinct_ids = list(
        PersonDistinctId.objects.filter(person=person).order_by("id").values_list("distinct_id", flat=True)
    )
    overrides = PersonOverride.objects.filter(project=project, override_person_uuid=person.uuid)
    person_ids = [str(person.uuid), *(str(old) for old in overrides.values_list("old_person_uuid", flat=True))]
    overrides.delete()
    person.delete()
    request = None
    if delete_events:
        request = DeletionRequest.objects.create(
            project=project,
            requested_by=user,
            kind=DeletionRequest.Kind.PERSON,
            filter={"person_uuid": str(person.uuid), "distinct_ids": distinct_ids, "person_ids": person_ids},
            suppress=suppress,
            status=DeletionStatus.COUNTING,
        )
        enqueue(request)
    if suppress:
        for distinct_id in distinct_ids:
            add_suppression(project, distinct_id, user, reason="person deleted", request=request)
    return request


def delete_events(project: Project, spec: dict, user=None, *, dry_run: bool = True) -> DeletionRequest:
    """Queue the deletion of the project's events matching `spec` (event, distinct_id, after,
    before); a dry run stops after counting until `confirm`."""
    request = DeletionRequest.objects.create(
        project=project, requested_by=user, kind=DeletionRequest.Kind.FILTER, filter=spec, dry_run=dry_run
    )
    enqueue(request)
    return request


def confirm(request: DeletionRequest) -> bool:
    """A counted dry run goes ahead (`request` says queued: a worker may be further already)."""
    if not deletion.confirm(request):
        return False
    request.status = DeletionStatus.QUEUED
    enqueue(request)
    return True


def add_suppression(
    project: Project, distinct_id: str, user=None, *, reason: str = "", request: DeletionRequest | None = None
) -> Suppression:
    """Suppress `distinct_id` (the active suppression, if it is suppressed already)."""
    existing = Suppression.objects.filter(project=project, distinct_id=distinct_id, lifted_at__isnull=True).first()
    if existing is not None:
        return existing
    try:
        with transaction.atomic():
            made = Suppression.objects.create(
                project=project, distinct_id=distinct_id, reason=reason, deletion_request=request, created_by=user
            )
    except IntegrityError:  # suppressed at the same moment by another request
        return Suppression.objects.get(project=project, distinct_id=distinct_id, lifted_at__isnull=True)
    suppression.changed(project.pk)
    return made


def lift_suppression(item: Suppression, user=None) -> bool:
    """Let the id's events in again; False if it was lifted already."""
    lifted = Suppression.objects.filter(pk=item.pk, lifted_at__isnull=True).update(
        lifted_at=timezone.now(), lifted_by=user
    )
    if lifted:
        suppression.changed(item.project_id)
    item.refresh_from_db()
    return bool(lifted)

"""Persons API, scoped to the caller's project like the events API.

- `GET /api/projects/<id>/persons/`: newest first, `{"results": [...], "next": url|null}`.
  Query parameters:
  - `distinct_id=<id>`: the person that has this distinct id (exact match);
  - `properties=<JSON object>`: persons whose properties equal every given value, e.g.
    `?properties={"email":"a@b.c","plan":"pro"}`; values must be strings, numbers, booleans or
    null (null matches a property that is present and null);
  - `limit` (1-1000, default 100) and `cursor` (from `next`).
- `GET /api/projects/<id>/persons/<uuid>/`: one person with its distinct ids.
- `DELETE /api/projects/<id>/persons/<uuid>/`: deletes the person, its distinct ids and the
  overrides that point at it (204). Stored events keep their person_id unless
  `?delete_events=true`: then a deletion request deletes them on a worker (202, the request);
  `&suppress=true` also drops its distinct ids' later events (docs/privacy.md). Otherwise the
  next event of one of its distinct ids makes a new person.

A person is `{"id": uuid, "distinct_ids": [...], "properties": {...}, "created_at": ISO 8601,
"is_identified": bool}`. Unknown ids, and persons of other projects, are 404.
"""

import base64
import uuid
from datetime import datetime

import orjson
from django.db.models import Prefetch, Q, QuerySet
from django.db.models.fields.json import KeyTransform
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from bklog_app.api.scoping import project_for
from bklog_app.persons.models import Person, PersonDistinctId
from bklog_app.privacy import service
from bklog_app.privacy.serializers import DeletionRequestSerializer
from pipeline.persons.properties import sanitize

MAX_LIMIT = 1000
SCALARS = (str, int, float, bool, type(None))


class PersonQuery(serializers.Serializer):
    distinct_id = serializers.CharField(required=False, allow_blank=True, default="")
    properties = serializers.CharField(required=False, help_text='A JSON object, e.g. {"email": "a@b.c"}.')
    limit = serializers.IntegerField(required=False, min_value=1, max_value=MAX_LIMIT, default=100)
    cursor = serializers.CharField(required=False)

    def validate_properties(self, value: str) -> dict:
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise serializers.ValidationError(
                'Must be a JSON object, such as {"email": "a@b.c"}; check the quoting and URL-encoding.'
            ) from None
        if not isinstance(parsed, dict) or not parsed:
            raise serializers.ValidationError('Must be a non-empty JSON object, such as {"email": "a@b.c"}.')
        for key, item in parsed.items():
            if not isinstance(item, SCALARS):
                raise serializers.ValidationError(
                    f"The value of {key!r} must be a string, number, boolean or null; objects and lists "
                    "cannot be matched."
                )
        # Stored properties have NUL characters replaced (PostgreSQL's jsonb refuses them).
        return sanitize(parsed)

    def validate_cursor(self, value: str) -> tuple[datetime, uuid.UUID]:
        try:
            created_at, person_uuid = base64.urlsafe_b64decode(value.encode()).decode().split("|", 1)
            return datetime.fromisoformat(created_at), uuid.UUID(person_uuid)
        except ValueError:
            raise serializers.ValidationError("Invalid cursor; use the `next` link as given.") from None


class PersonDeleteQuery(serializers.Serializer):
    delete_events = serializers.BooleanField(
        required=False, default=False, help_text="Also delete the person's events (a deletion request, 202)."
    )
    suppress = serializers.BooleanField(
        required=False, default=False, help_text="Drop the later events of the person's distinct ids."
    )


class PersonSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="uuid", read_only=True)
    distinct_ids = serializers.SerializerMethodField()
    created_at = serializers.SerializerMethodField(help_text="ISO 8601 UTC with milliseconds")

    class Meta:
        model = Person
        fields = ["id", "distinct_ids", "properties", "created_at", "is_identified"]

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_distinct_ids(self, person: Person) -> list[str]:
        return [row.distinct_id for row in person.distinct_ids.all()]

    @extend_schema_field(OpenApiTypes.STR)
    def get_created_at(self, person: Person) -> str:
        return person.created_at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{person.created_at.microsecond // 1000:03d}Z"


class PersonPage(serializers.Serializer):
    results = PersonSerializer(many=True)
    next = serializers.URLField(allow_null=True)


PERSON_ID = OpenApiParameter("person_id", OpenApiTypes.UUID, OpenApiParameter.PATH)


def persons_of(project) -> QuerySet[Person]:
    return Person.objects.filter(project=project).prefetch_related(
        Prefetch("distinct_ids", queryset=PersonDistinctId.objects.order_by("id"))
    )


class PersonListView(APIView):
    @extend_schema(operation_id="projects_persons_list", parameters=[PersonQuery], responses=PersonPage)
    def get(self, request, project_id: int):
        project = project_for(request.user, project_id)
        query = PersonQuery(data=request.query_params)
        if not query.is_valid():
            raise ValidationError(query.errors)
        params = query.validated_data
        persons = persons_of(project)
        if params.get("distinct_id"):
            persons = persons.filter(distinct_ids__distinct_id=params["distinct_id"])
        for number, (key, value) in enumerate((params.get("properties") or {}).items()):
            alias = f"property_{number}"
            persons = persons.alias(**{alias: KeyTransform(key, "properties")}).filter(**{alias: value})
        if params.get("cursor"):
            created_at, person_uuid = params["cursor"]
            persons = persons.filter(Q(created_at__lt=created_at) | Q(created_at=created_at, uuid__lt=person_uuid))
        limit = params["limit"]
        page = list(persons.order_by("-created_at", "-uuid")[: limit + 1])
        next_url = None
        if len(page) > limit:
            page = page[:limit]
            last = page[-1]
            cursor = base64.urlsafe_b64encode(f"{last.created_at.isoformat()}|{last.uuid}".encode()).decode()
            query_params = request.query_params.copy()
            query_params["cursor"] = cursor
            next_url = request.build_absolute_uri(f"{request.path}?{query_params.urlencode()}")
        return Response({"results": PersonSerializer(page, many=True).data, "next": next_url})


class PersonDetailView(APIView):
    @extend_schema(parameters=[PERSON_ID], responses=PersonSerializer)
    def get(self, request, project_id: int, person_id: str):
        return Response(PersonSerializer(self._person(request, project_id, person_id)).data)

    @extend_schema(parameters=[PERSON_ID, PersonDeleteQuery], responses={204: None, 202: DeletionRequestSerializer})
    def delete(self, request, project_id: int, person_id: str):
        person = self._person(request, project_id, person_id)
        query = PersonDeleteQuery(data=request.query_params)
        if not query.is_valid():
            raise ValidationError(query.errors)
        try:
            deletion = service.delete_person(person.project, person.uuid, request.user, **query.validated_data)
        except service.PersonGone:
            raise NotFound("No such person in this project.") from None
        if deletion is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(DeletionRequestSerializer(deletion).data, status=status.HTTP_202_ACCEPTED)

    def _person(self, request, project_id: int, person_id: str) -> Person:
        project = project_for(request.user, project_id)
        try:
            return persons_of(project).get(uuid=uuid.UUID(person_id))
        except (ValueError, Person.DoesNotExist):
            raise NotFound("No such person in this project.") from None

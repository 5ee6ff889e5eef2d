"""Dead letters (list, filter, replay one or many, delete) and ingestion warnings (list, filter)."""

from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from bklog_app.api.pagination import Pagination
from bklog_app.api.scoping import project_for
from bklog_app.models import DeadLetter, IngestionWarning
from pipeline.deadletters.replay import replay

MAX_REPLAY = 10_000


class DeadLetterSerializer(serializers.ModelSerializer):
    class Meta:
        model = DeadLetter
        fields = ["id", "kind", "step", "error", "payload", "context", "created_at", "replayed_at"]
        read_only_fields = fields


class _ProjectScoped:
    def project(self):
        return project_for(self.request.user, self.kwargs["project_id"])


def filter_dead_letters(queryset, params):
    for field in ("kind", "step"):
        if params.get(field):
            queryset = queryset.filter(**{field: params[field]})
    if params.get("replayed") in ("true", "false"):
        queryset = queryset.filter(replayed_at__isnull=params["replayed"] == "false")
    return queryset


class DeadLetterList(_ProjectScoped, generics.ListAPIView):
    """Filters: `kind` (event, on_event, export_events, job), `step`, `replayed` (true/false)."""

    serializer_class = DeadLetterSerializer
    pagination_class = Pagination

    def get_queryset(self):
        return filter_dead_letters(self.project().dead_letters.order_by("-id"), self.request.query_params)


class DeadLetterDetail(_ProjectScoped, generics.RetrieveDestroyAPIView):
    serializer_class = DeadLetterSerializer

    def get_object(self):
        return generics.get_object_or_404(self.project().dead_letters, pk=self.kwargs["letter_id"])


class ReplayRequest(serializers.Serializer):
    ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=2**63 - 1), required=False, max_length=MAX_REPLAY
    )
    kind = serializers.CharField(required=False)
    step = serializers.CharField(required=False)


class ReplayResult(serializers.Serializer):
    replayed = serializers.IntegerField()


class DeadLetterReplayOne(_ProjectScoped, APIView):
    """POST: queue this dead letter's work again."""

    serializer_class = ReplayResult

    @extend_schema(request=None, responses={202: ReplayResult}, operation_id="projects_dead_letters_replay_one")
    def post(self, request, project_id: int, letter_id: int):
        letter = generics.get_object_or_404(self.project().dead_letters, pk=letter_id)
        replay(letter)
        return Response({"replayed": 1}, status=status.HTTP_202_ACCEPTED)


class DeadLetterReplayMany(_ProjectScoped, APIView):
    """POST {"ids": [...]} or {"kind", "step"}: replay those not yet replayed."""

    serializer_class = ReplayRequest

    @extend_schema(
        request=ReplayRequest, responses={202: ReplayResult}, operation_id="projects_dead_letters_replay_many"
    )
    def post(self, request, project_id: int):
        body = ReplayRequest(data=request.data)
        body.is_valid(raise_exception=True)
        letters = self.project().dead_letters.filter(replayed_at__isnull=True)
        if body.validated_data.get("ids") is not None:
            letters = letters.filter(pk__in=body.validated_data["ids"])
        letters = filter_dead_letters(letters, body.validated_data)
        count = 0
        for letter in letters.order_by("id")[:MAX_REPLAY]:
            replay(letter)
            count += 1
        return Response({"replayed": count}, status=status.HTTP_202_ACCEPTED)


class IngestionWarningSerializer(serializers.ModelSerializer):
    class Meta:
        model = IngestionWarning
        fields = ["id", "type", "event_uuid", "details", "created_at"]
        read_only_fields = fields


class IngestionWarningList(_ProjectScoped, generics.ListAPIView):
    """Filters: `type`, `event_uuid`."""

    serializer_class = IngestionWarningSerializer
    pagination_class = Pagination

    def get_queryset(self):
        queryset = self.project().ingestion_warnings.order_by("-id")
        for field in ("type", "event_uuid"):
            if self.request.query_params.get(field):
                queryset = queryset.filter(**{field: self.request.query_params[field]})
        return queryset

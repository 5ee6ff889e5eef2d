"""Personal API keys: created (the key is shown once), listed by mask, revoked."""

from django.utils import timezone
from rest_framework import generics, serializers, status
from rest_framework.response import Response

from bklog_app.api.pagination import Pagination
from bklog_app.models import PersonalAPIKey


class APIKeySerializer(serializers.ModelSerializer):
    class Meta:
        model = PersonalAPIKey
        fields = ["id", "label", "mask", "created_at", "last_used_at", "revoked_at"]
        read_only_fields = ["id", "mask", "created_at", "last_used_at", "revoked_at"]


class CreatedAPIKeySerializer(APIKeySerializer):
    key = serializers.CharField(read_only=True, help_text="The key itself. Shown this once; only its hash is kept.")

    class Meta(APIKeySerializer.Meta):
        fields = [*APIKeySerializer.Meta.fields, "key"]


class APIKeyList(generics.ListCreateAPIView):
    serializer_class = APIKeySerializer
    pagination_class = Pagination

    def get_queryset(self):
        return PersonalAPIKey.objects.filter(user=self.request.user).order_by("id")

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        record, key = PersonalAPIKey.issue(request.user, label=serializer.validated_data.get("label", "default"))
        body = CreatedAPIKeySerializer(record).data
        body["key"] = key
        return Response(body, status=status.HTTP_201_CREATED)


class APIKeyDetail(generics.RetrieveDestroyAPIView):
    serializer_class = APIKeySerializer

    def get_queryset(self):
        return PersonalAPIKey.objects.filter(user=self.request.user)

    def perform_destroy(self, instance):
        """Revoke (kept, with the time, for the audit trail); it stops working at once."""
        if instance.revoked_at is None:
            instance.revoked_at = timezone.now()
            instance.save(update_fields=["revoked_at"])

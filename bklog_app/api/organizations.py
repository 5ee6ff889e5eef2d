"""Organizations and their members. Everyone sees only the organizations they belong to.

An organization always has an admin (bklog_app/memberships.py): whoever creates one is its
admin, and demoting or removing its last admin is refused with 409 `last_admin`.
"""

from django.contrib.auth import get_user_model
from django.db import transaction
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import generics, serializers, status
from rest_framework.exceptions import APIException

from bklog_app.api.pagination import Pagination
from bklog_app.api.permissions import require_admin
from bklog_app.memberships import LastAdminError, check_an_admin_remains, lock_roles
from bklog_app.models import Membership, Organization


class OrganizationSerializer(serializers.ModelSerializer):
    role = serializers.SerializerMethodField()

    class Meta:
        model = Organization
        fields = ["id", "name", "created_at", "role"]
        read_only_fields = ["id", "created_at", "role"]

    def get_role(self, organization) -> str | None:
        user = self.context["request"].user
        return next((m.role for m in organization.memberships.all() if m.user_id == user.id), None)


def organizations_for(user):
    return Organization.objects.filter(memberships__user=user).prefetch_related("memberships").distinct()


class OrganizationList(generics.ListCreateAPIView):
    serializer_class = OrganizationSerializer
    pagination_class = Pagination

    def get_queryset(self):
        return organizations_for(self.request.user).order_by("id")

    @transaction.atomic
    def perform_create(self, serializer):
        organization = serializer.save()
        Membership.objects.create(organization=organization, user=self.request.user, role=Membership.Role.ADMIN)


class OrganizationDetail(generics.RetrieveUpdateDestroyAPIView):
    serializer_class = OrganizationSerializer

    def get_queryset(self):
        return organizations_for(self.request.user)

    def perform_update(self, serializer):
        require_admin(self.request.user, serializer.instance)
        serializer.save()

    def perform_destroy(self, instance):
        require_admin(self.request.user, instance)
        instance.delete()


class MemberSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username")

    class Meta:
        model = Membership
        fields = ["id", "username", "role", "joined_at"]
        read_only_fields = ["id", "joined_at"]

    def validate_username(self, value):
        if not get_user_model().objects.filter(username=value).exists():
            raise serializers.ValidationError(f"No user named {value!r}. Create it first (manage.py create_api_key).")
        return value

    def create(self, validated_data):
        user = get_user_model().objects.get(username=validated_data["user"]["username"])
        organization = self.context["organization"]
        if Membership.objects.filter(organization=organization, user=user).exists():
            raise serializers.ValidationError({"username": "This user is already a member."})
        return Membership.objects.create(
            organization=organization, user=user, role=validated_data.get("role", "member")
        )

    def update(self, instance, validated_data):
        instance.role = validated_data.get("role", instance.role)
        instance.save(update_fields=["role"])
        return instance


class _OrganizationScoped:
    def organization(self) -> Organization:
        return get_object_or_404(organizations_for(self.request.user), pk=self.kwargs["organization_id"])

    def get_serializer_context(self):
        context = super().get_serializer_context()
        if "organization_id" in self.kwargs and getattr(self, "swagger_fake_view", False) is False:
            context["organization"] = self.organization()
        return context


class MemberList(_OrganizationScoped, generics.ListCreateAPIView):
    serializer_class = MemberSerializer
    pagination_class = Pagination

    def get_queryset(self):
        return self.organization().memberships.select_related("user").order_by("id")

    def perform_create(self, serializer):
        require_admin(self.request.user, self.organization())
        serializer.save()


class LastAdmin(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "last_admin"


LAST_ADMIN_RESPONSE = OpenApiResponse(
    response={"$ref": "#/components/schemas/Error"},
    description="The member is the organization's last admin (code `last_admin`): make another member an admin first.",
)


@extend_schema_view(
    put=extend_schema(responses={200: MemberSerializer, 409: LAST_ADMIN_RESPONSE}),
    patch=extend_schema(responses={200: MemberSerializer, 409: LAST_ADMIN_RESPONSE}),
    delete=extend_schema(responses={204: None, 409: LAST_ADMIN_RESPONSE}),
)
class MemberDetail(_OrganizationScoped, generics.RetrieveUpdateDestroyAPIView):
    serializer_class = MemberSerializer

    def get_queryset(self):
        return self.organization().memberships.select_related("user")

    @transaction.atomic
    def perform_update(self, serializer):
        organization = self.organization()
        require_admin(self.request.user, organization)
        membership = serializer.instance
        self._check_an_admin_remains(organization, membership, serializer.validated_data.get("role", membership.role))
        serializer.save()

    @transaction.atomic
    def perform_destroy(self, instance):
        organization = self.organization()
        require_admin(self.request.user, organization)
        self._check_an_admin_remains(organization, instance, None)
        instance.delete()

    @staticmethod
    def _check_an_admin_remains(organization: Organization, membership: Membership, new_role: str | None) -> None:
        lock_roles(organization)
        try:
            check_an_admin_remains(membership, new_role)
        except LastAdminError as error:
            raise LastAdmin(str(error)) from error

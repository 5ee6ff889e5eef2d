"""Personal API keys: `Authorization: Bearer <key>`; only the key's SHA-256 is stored."""

from datetime import timedelta

from django.utils import timezone
from rest_framework import authentication, exceptions

from bklog_app.models import PersonalAPIKey

LAST_USED_PRECISION = timedelta(minutes=1)


class PersonalAPIKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = request.headers.get("Authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme != self.keyword or not key.strip():
            return None
        record = (
            PersonalAPIKey.objects.select_related("user")
            .filter(key_hash=PersonalAPIKey.hash_key(key.strip()), revoked_at__isnull=True)
            .first()
        )
        if record is None or not record.user.is_active:
            raise exceptions.AuthenticationFailed("This API key is invalid or revoked.", code="invalid_api_key")
        now = timezone.now()
        if record.last_used_at is None or now - record.last_used_at > LAST_USED_PRECISION:
            PersonalAPIKey.objects.filter(pk=record.pk).update(last_used_at=now)
        return record.user, record

    def authenticate_header(self, request):
        return self.keyword

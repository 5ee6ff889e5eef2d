"""Request and response shapes of /api/plugins/ and /api/projects/<id>/plugin_configs/ (issue 3 §11)."""

from django.db import transaction
from rest_framework import serializers
from rest_framework.exceptions import PermissionDenied

from bklog_app.plugins.models import Plugin, PluginAttachment, PluginConfig, PluginLogEntry, PluginSourceFile
from pipeline.plugins.config import ConfigError, mask_secrets, validate_config
from pipeline.plugins.loader import (
    PluginCode,
    PluginLoadError,
    builtin_folder,
    code_from_folder,
    code_from_source,
    inspect_code,
    local_folder,
)

STAFF_ONLY = (
    "Only staff users may create or edit source plugins; an operator can make a user staff with "
    "`python manage.py create_api_key USERNAME --staff`."
)
MAX_SOURCE_BYTES = 1024 * 1024


def check_source_files(value) -> dict[str, str]:
    if not isinstance(value, dict) or not value:
        raise serializers.ValidationError('Send {"plugin.json": "...", "plugin.py": "..."}: file names to contents.')
    for name, text in value.items():
        if not isinstance(name, str) or "/" in name or name.startswith(".") or not name:
            raise serializers.ValidationError(f"{name!r} is not a plain file name.")
        if not isinstance(text, str):
            raise serializers.ValidationError(f"The contents of {name} must be a string.")
        if len(text.encode()) > MAX_SOURCE_BYTES:
            raise serializers.ValidationError(f"{name} is larger than {MAX_SOURCE_BYTES} bytes.")
    return value


class PluginSerializer(serializers.ModelSerializer):
    source_type = serializers.ChoiceField(choices=Plugin.SourceType.choices)
    name = serializers.CharField(max_length=200, required=False, allow_blank=False)
    builtin = serializers.CharField(max_length=100, required=False, allow_blank=True)
    path = serializers.CharField(max_length=500, required=False, allow_blank=True)
    source = serializers.JSONField(write_only=True, required=False)
    description = serializers.SerializerMethodField()
    config_schema = serializers.SerializerMethodField()

    class Meta:
        model = Plugin
        fields = [
            "id", "name", "source_type", "capabilities", "builtin", "path", "source",
            "description", "config_schema", "organization", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = ["capabilities", "organization", "created_at", "updated_at"]

    def get_description(self, plugin: Plugin) -> str:
        return plugin.plugin_json.get("description", "")

    def get_config_schema(self, plugin: Plugin) -> list:
        return plugin.config_schema

    def validate(self, attrs):
        request = self.context["request"]
        if self.instance is not None:
            if "source_type" in attrs and attrs["source_type"] != self.instance.source_type:
                raise serializers.ValidationError({"source_type": "A plugin's source type cannot change."})
            attrs["source_type"] = self.instance.source_type
            for key in ("builtin", "path"):
                if key in attrs and attrs[key] != getattr(self.instance, key):
                    raise serializers.ValidationError({key: f"A plugin's {key} cannot change; create a new plugin."})
        source_type = attrs["source_type"]
        if source_type == Plugin.SourceType.SOURCE and not request.user.is_staff:
            raise PermissionDenied(STAFF_ONLY, code="permission_denied")
        code, field = self._code(attrs)
        if code is not None:
            try:
                attrs["capabilities"] = inspect_code(code)
            except PluginLoadError as exc:
                raise serializers.ValidationError({field: str(exc)}) from None
            attrs["plugin_json"] = code.manifest
            attrs.setdefault("name", self.instance.name if self.instance else code.manifest["name"])
        return attrs

    def _code(self, attrs) -> tuple[PluginCode | None, str]:
        source_type = attrs["source_type"]
        try:
            if source_type == Plugin.SourceType.BUILTIN:
                if self.instance is not None:
                    return None, "builtin"
                if not attrs.get("builtin"):
                    raise serializers.ValidationError(
                        {"builtin": "Name the built-in plugin (GET /api/plugins/builtins/)."}
                    )
                return code_from_folder("builtin", builtin_folder(attrs["builtin"])), "builtin"
            if source_type == Plugin.SourceType.LOCAL:
                if self.instance is not None:
                    return None, "path"
                if not attrs.get("path"):
                    raise serializers.ValidationError({"path": "Name the plugin's folder under PLUGINS_DIR."})
                return code_from_folder("local", local_folder(attrs["path"])), "path"
            if "source" not in attrs:
                if self.instance is None:
                    raise serializers.ValidationError({"source": 'Send {"plugin.json": "...", "plugin.py": "..."}.'})
                return None, "source"
            files = check_source_files(attrs["source"]) if self.instance is None else self._merged(attrs["source"])
            attrs["source"] = files
            return code_from_source(files, f"new-{self.instance.pk if self.instance else 'plugin'}"), "source"
        except PluginLoadError as exc:
            field = {"builtin": "builtin", "local": "path"}.get(source_type, "source")
            raise serializers.ValidationError({field: str(exc)}) from None
        except serializers.ValidationError as exc:
            if isinstance(exc.detail, dict):
                raise
            raise serializers.ValidationError({"source": exc.detail}) from None

    def _merged(self, changes) -> dict[str, str]:
        """PATCH of source files: named files replaced, `null` deletes one, others kept."""
        if not isinstance(changes, dict):
            raise serializers.ValidationError({"source": "Send {file name: contents or null}."})
        files = {f.filename: f.source for f in self.instance.source_files.all()}
        for name, text in changes.items():
            if text is None:
                files.pop(name, None)
            else:
                files[name] = text
        return check_source_files(files)

    @transaction.atomic
    def create(self, validated_data):
        files = validated_data.pop("source", None)
        request = self.context["request"]
        membership = request.user.memberships.order_by("id").first()
        plugin = Plugin.objects.create(
            organization_id=membership.organization_id if membership else None,
            created_by=request.user,
            **validated_data,
        )
        for filename, text in (files or {}).items():
            PluginSourceFile.objects.create(plugin=plugin, filename=filename, source=text)
        return plugin

    @transaction.atomic
    def update(self, plugin, validated_data):
        files = validated_data.pop("source", None)
        for key in ("name", "capabilities", "plugin_json"):
            if key in validated_data:
                setattr(plugin, key, validated_data[key])
        if files is not None:
            plugin.source_files.exclude(filename__in=list(files)).delete()
            for filename, text in files.items():
                PluginSourceFile.objects.update_or_create(plugin=plugin, filename=filename, defaults={"source": text})
        plugin.save()
        return plugin


class PluginConfigSerializer(serializers.ModelSerializer):
    plugin = serializers.PrimaryKeyRelatedField(queryset=Plugin.objects.none())
    config = serializers.JSONField(required=False)
    name = serializers.CharField(source="plugin.name", read_only=True)
    attachments = serializers.SerializerMethodField()

    class Meta:
        model = PluginConfig
        fields = [
            "id",
            "plugin",
            "name",
            "enabled",
            "order",
            "config",
            "attachments",
            "error",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["error", "created_at", "updated_at"]

    def __init__(self, *args, plugins=None, **kwargs):
        super().__init__(*args, **kwargs)
        if plugins is not None:
            self.fields["plugin"].queryset = plugins

    def get_attachments(self, config: PluginConfig) -> dict:
        return {
            a.key: {"file_name": a.file_name, "content_type": a.content_type, "file_size": a.file_size}
            for a in config.attachments.all()
        }

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["config"] = mask_secrets(instance.plugin.config_schema, instance.config or {})
        return data

    def validate_plugin(self, plugin):
        if self.instance is not None and plugin.pk != self.instance.plugin_id:
            raise serializers.ValidationError("A config's plugin cannot change; create a new config.")
        return plugin

    def validate(self, attrs):
        plugin = attrs.get("plugin") or self.instance.plugin
        if self.instance is None or "config" in attrs:
            existing = dict(self.instance.config or {}) if self.instance else {}
            incoming = attrs.get("config", {})
            if incoming is not None and not isinstance(incoming, dict):
                raise serializers.ValidationError({"config": "config must be an object of {key: value}."})
            values = {**existing, **(incoming or {})}
            values = {key: value for key, value in values.items() if value is not None}
            present = (
                frozenset(self.instance.attachments.values_list("key", flat=True)) if self.instance else frozenset()
            )
            try:
                clean = validate_config(plugin.config_schema, values, existing=existing, existing_attachments=present)
            except ConfigError as exc:
                raise serializers.ValidationError({"config": {exc.key: [exc.message]}}) from None
            attrs["config"] = clean.values
            attrs["new_attachments"] = clean.attachments
        return attrs

    @transaction.atomic
    def create(self, validated_data):
        attachments = validated_data.pop("new_attachments", [])
        config = PluginConfig.objects.create(project=self.context["project"], **validated_data)
        _save_attachments(config, attachments)
        return config

    @transaction.atomic
    def update(self, config, validated_data):
        attachments = validated_data.pop("new_attachments", [])
        if validated_data.get("enabled") and not config.enabled:
            config.error = None  # turned back on: the reason it was off no longer applies
        for key, value in validated_data.items():
            setattr(config, key, value)
        _save_attachments(config, attachments)
        config.save()
        return config


def _save_attachments(config: PluginConfig, attachments) -> None:
    for new in attachments:
        PluginAttachment.objects.update_or_create(
            plugin_config=config,
            key=new.key,
            defaults={
                "file_name": new.file_name,
                "content_type": new.content_type,
                "file_size": len(new.contents),
                "contents": new.contents,
            },
        )


class PluginLogEntrySerializer(serializers.ModelSerializer):
    class Meta:
        model = PluginLogEntry
        fields = ["id", "timestamp", "source", "type", "message", "instance_id"]


class TestRunSerializer(serializers.Serializer):
    event = serializers.JSONField()

    def validate_event(self, value):
        if not isinstance(value, dict):
            raise serializers.ValidationError('event must be an object, such as {"event": "signed_up", ...}.')
        return value

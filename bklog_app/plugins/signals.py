"""Any saved or deleted plugin, source file, config or attachment reloads the workers.

Publishing happens after the transaction commits, so a worker that reloads reads the new rows.
Error bookkeeping uses `QuerySet.update()`, which sends no signal: recording an error must not
reload anything.
"""

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from bklog_app.plugins.models import Plugin, PluginAttachment, PluginConfig, PluginSourceFile
from pipeline.plugins.reload import publish_reload


def _publish_after_commit(**target) -> None:
    transaction.on_commit(lambda: publish_reload(**target))


@receiver([post_save, post_delete], sender=Plugin)
def _plugin_changed(sender, instance: Plugin, **_) -> None:
    _publish_after_commit(plugin_id=instance.pk)


@receiver([post_save, post_delete], sender=PluginSourceFile)
def _source_changed(sender, instance: PluginSourceFile, **_) -> None:
    _publish_after_commit(plugin_id=instance.plugin_id)


@receiver([post_save, post_delete], sender=PluginConfig)
def _config_changed(sender, instance: PluginConfig, **_) -> None:
    _publish_after_commit(plugin_config_id=instance.pk, project_id=instance.project_id)


@receiver([post_save, post_delete], sender=PluginAttachment)
def _attachment_changed(sender, instance: PluginAttachment, **_) -> None:
    _publish_after_commit(plugin_config_id=instance.plugin_config_id)

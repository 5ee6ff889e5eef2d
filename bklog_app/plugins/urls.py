from django.urls import path

from bklog_app.plugins import views

urlpatterns = [
    path("api/plugins/", views.PluginListView.as_view(), name="plugins"),
    path("api/plugins/builtins/", views.BuiltinListView.as_view(), name="plugin-builtins"),
    path("api/plugins/<int:plugin_id>/", views.PluginDetailView.as_view(), name="plugin"),
    path("api/plugins/<int:plugin_id>/source/", views.PluginSourceView.as_view(), name="plugin-source"),
    path("api/plugins/<int:plugin_id>/reload/", views.PluginReloadView.as_view(), name="plugin-reload"),
    path(
        "api/projects/<int:project_id>/plugin_configs/",
        views.PluginConfigListView.as_view(),
        name="plugin-configs",
    ),
    path(
        "api/projects/<int:project_id>/plugin_configs/<int:config_id>/",
        views.PluginConfigDetailView.as_view(),
        name="plugin-config",
    ),
    path(
        "api/projects/<int:project_id>/plugin_configs/<int:config_id>/logs/",
        views.PluginLogListView.as_view(),
        name="plugin-config-logs",
    ),
    path(
        "api/projects/<int:project_id>/plugin_configs/<int:config_id>/test/",
        views.PluginTestRunView.as_view(),
        name="plugin-config-test",
    ),
]

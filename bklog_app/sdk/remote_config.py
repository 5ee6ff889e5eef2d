"""A project's SDK settings in the shapes PostHog answers with (field names as posthog-js reads them).

Three shapes carry the same settings:
- `remote_config`: `GET /array/<token>/config` and, wrapped in a script by `config_js`, the
  `config.js` posthog-js loads first (it assigns `window._POSTHOG_REMOTE_CONFIG[token]`).
- `flags_config`: the config fields `/flags/` (with `config=true`) and `/decide/` add to their flags.
- `posthog_js_options`: the init options for the settings posthog-js cannot be told remotely
  (capture_pageview, capture_pageleave, person_profiles), shown by the project API.
"""

import json

import orjson

from pipeline.ingestion.projects import ProjectInfo

SUPPORTED_COMPRESSION = ["gzip", "gzip-js"]
# PostHog's capture endpoint for analytics events; posthog-js sends its events there once told.
ANALYTICS_ENDPOINT = "/i/v0/e/"


def remote_config(token: str, project: ProjectInfo) -> dict:
    return {
        "token": token,
        "supportedCompression": SUPPORTED_COMPRESSION,
        "hasFeatureFlags": False,
        "captureDeadClicks": project.capture_dead_clicks,
        "capturePerformance": _capture_performance(project),
        "autocapture_opt_out": project.autocapture_opt_out,
        "autocaptureExceptions": project.autocapture_exceptions_opt_in,
        "analytics": {"endpoint": ANALYTICS_ENDPOINT},
        "elementsChainAsString": True,
        "errorTracking": _error_tracking(project),
        "sessionRecording": False,
        "heatmaps": project.heatmaps_opt_in,
        # No `surveys` (PostHog sends false): on false, posthog-js still loads its surveys script
        # from the API host (/static/<version>/surveys.js), which bklog does not serve; without
        # the key it loads nothing.
        "productTours": False,
        "defaultIdentifiedOnly": project.default_identified_only,
        "siteApps": [],
    }


def config_js(token: str, project: ProjectInfo) -> str:
    """The script form: the config (without `siteApps`, which become `siteApps` loaders beside it)."""
    config = remote_config(token, project)
    del config["siteApps"]
    key = json.dumps(token)
    return (
        "(function() {\n"
        "  window._POSTHOG_REMOTE_CONFIG = window._POSTHOG_REMOTE_CONFIG || {};\n"
        f"  window._POSTHOG_REMOTE_CONFIG[{key}] = {{\n"
        f"    config: {orjson.dumps(config).decode()},\n"
        "    siteApps: []\n"
        "  };\n"
        "})();\n"
    )


def flags_config(project: ProjectInfo) -> dict:
    return {
        "supportedCompression": SUPPORTED_COMPRESSION,
        "autocapture_opt_out": project.autocapture_opt_out,
        "analytics": {"endpoint": ANALYTICS_ENDPOINT},
        "elementsChainAsString": True,
        "capturePerformance": _capture_performance(project),
        "config": {"enable_collect_everything": True},
        "autocaptureExceptions": {"endpoint": "/e/"} if project.autocapture_exceptions_opt_in else False,
        "sessionRecording": False,
        "surveys": False,
        "toolbarParams": {},
        "isAuthenticated": False,
        "siteApps": [],
        "heatmaps": project.heatmaps_opt_in,
        "flagsPersistenceDefault": False,
        "defaultIdentifiedOnly": project.default_identified_only,
        "captureDeadClicks": project.capture_dead_clicks,
        "errorTracking": _error_tracking(project),
    }


def posthog_js_options(project: ProjectInfo) -> dict:
    """`posthog.init(token, {...})` options for what the remote config cannot set."""
    return {
        "capture_pageview": project.capture_pageview,
        "capture_pageleave": project.capture_pageleave,
        "person_profiles": "identified_only" if project.default_identified_only else "always",
    }


def _capture_performance(project: ProjectInfo) -> dict | bool:
    if not (project.capture_performance_opt_in or project.autocapture_web_vitals_opt_in):
        return False
    performance: dict = {
        "network_timing": project.capture_performance_opt_in,
        "web_vitals": project.autocapture_web_vitals_opt_in,
    }
    if project.autocapture_web_vitals_opt_in:
        performance["web_vitals_allowed_metrics"] = None  # None: every metric posthog-js knows
    return performance


def _error_tracking(project: ProjectInfo) -> dict:
    return {"autocaptureExceptions": project.autocapture_exceptions_opt_in, "suppressionRules": []}

"""What the PostHog SDKs ask for besides capture: the remote config and feature flags.

posthog-js starts by loading `/array/<token>/config.js` (or, failing that, the JSON form
`/array/<token>/config`) and posting to `/flags/?v=2`; it turns on compression and autocapture
only once those answer. posthog-node and posthog-python post to `/flags/` (`?v=2`, `?v=4`),
older SDKs to `/decide/`; given a personal API key they also poll `/flags/definitions`
(definitions.py). bklog has no feature flags, recordings, surveys or site apps: the
answers are PostHog's for a project without them, carrying the project's SDK settings
(bklog_app.models.Project) in PostHog's field names.
"""

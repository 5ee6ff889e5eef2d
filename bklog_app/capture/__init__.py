"""The PostHog-compatible capture API: decode a request, check it, enqueue one message."""

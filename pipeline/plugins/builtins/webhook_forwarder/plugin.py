"""Forward stored events to a webhook, in the batches export_events receives."""

import json
import urllib.error
import urllib.parse
import urllib.request

from pipeline.plugins.api import RetryError


def setup_plugin(meta):
    url = meta.config.get("url") or ""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"url must be an http:// or https:// URL, not {url!r}")


def export_events(events, meta):
    body = json.dumps({"batch": events}, default=str).encode()
    request = urllib.request.Request(meta.config["url"], data=body, method="POST")  # noqa: S310 - http(s) only
    request.add_header("Content-Type", "application/json")
    if meta.config.get("auth_token"):
        request.add_header("Authorization", f"Bearer {meta.config['auth_token']}")
    timeout = float(meta.config.get("timeout_seconds") or 10)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - the configured URL
            status = response.status
    except urllib.error.HTTPError as exc:
        if exc.code >= 500:
            raise RetryError(f"the webhook answered {exc.code}; retrying") from exc
        raise RuntimeError(f"the webhook refused the batch with {exc.code}: {exc.read()[:300]!r}") from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise RetryError(f"the webhook could not be reached: {exc}") from exc
    meta.logger.debug(f"sent {len(events)} events to the webhook ({status})")

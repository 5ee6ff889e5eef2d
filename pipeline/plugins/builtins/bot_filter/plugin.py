"""Drop events sent by bots, judged by their user agent with crawlerdetect (a maintained port of
the CrawlerDetect pattern list). An event with no user agent is kept: server SDKs send none, and
dropping them is the mistake to avoid (PostHog shipped it once, posthog#60557)."""

from crawlerdetect import CrawlerDetect

USER_AGENT_PROPERTIES = ("$raw_user_agent", "$useragent", "$user_agent")


def _substrings(value) -> tuple[str, ...]:
    return tuple(part.strip().lower() for part in str(value or "").split(",") if part.strip())


def setup_plugin(meta):
    meta.state["detector"] = CrawlerDetect()
    meta.state["extra"] = _substrings(meta.config.get("extra_patterns"))
    meta.state["keep"] = _substrings(meta.config.get("keep_user_agents"))


def user_agent(event) -> str:
    properties = event.get("properties") or {}
    for key in USER_AGENT_PROPERTIES:
        value = properties.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return ""


def is_bot(agent: str, detector, extra=(), keep=()) -> bool:
    if not agent:
        return False
    lowered = agent.lower()
    if any(part in lowered for part in keep):
        return False
    return any(part in lowered for part in extra) or detector.isCrawler(agent)


def process_event(event, meta):
    agent = user_agent(event)
    return None if is_bot(agent, meta.state["detector"], meta.state["extra"], meta.state["keep"]) else event

"""Replaying the dead-letter store, whatever kind of work a letter holds."""

from bklog_app.models import DeadLetter


def replay(letter: DeadLetter) -> None:
    """Queue the work again. Events go back through ingestion; plugin work to its plugin."""
    if letter.kind == "event":
        from pipeline.ingestion.replay import replay_event

        replay_event(letter)
    else:
        from pipeline.plugins.deadletters import replay as replay_plugin_work

        replay_plugin_work(letter.pk)

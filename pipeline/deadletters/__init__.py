"""The dead-letter store: work that failed on bad data or a broken plugin, kept to replay.

`record` writes letters (and holds the one error format every letter uses); `replay` queues a
letter's work again. They are two modules because replaying reaches ingestion and the plugin
runtime, which themselves record letters.

Kinds: `event` (an event a step of ingestion failed on; payload the captured event, context the
request), and plugin work: `on_event`, `export_events` (payload {"events": [...]}) and `job`
(payload {"name", "payload"}), whose context names the plugin config.
"""

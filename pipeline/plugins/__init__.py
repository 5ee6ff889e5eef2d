"""Plugins: loading, the process_event chain, on_event / export_events, jobs, schedules."""

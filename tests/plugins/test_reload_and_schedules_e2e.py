"""Reload over pub/sub with teardown once, and run_every_minute once per period with two beats
(one leads; the other takes over when it dies)."""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from bklog_app.plugins.models import PluginLogEntry
from tests.conftest import ROOT
from tests.factories import wait_for_events
from tests.plugins.conftest import cache_values, event, post_batch, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_reload_after_a_config_change_runs_teardown_once(
    client, project, celery_worker, local_plugin, install, api_client
):
    path = local_plugin(
        """
        import uuid

        def setup_plugin(meta):
            meta.state["id"] = uuid.uuid4().hex
            meta.cache.lpush("setups", [meta.state["id"]])

        def teardown_plugin(meta):
            meta.cache.lpush("teardowns", [meta.state["id"]])

        def process_event(event, meta):
            event["properties"]["instance"] = meta.state["id"]
            event["properties"]["greeting"] = meta.config.get("greeting")
            return event
        """,
        config=[{"key": "greeting", "type": "string", "default": "hello"}],
    )
    plugin, config = install({"source_type": "local", "path": path})
    url = f"/api/projects/{project.id}/plugin_configs/{config['id']}/"

    post_batch(client, project.api_token, [event("first", f"user-{i}") for i in range(4)])
    wait_for_events(project.id, 4)
    old = set(cache_values(plugin["id"], project.id, "setups"))
    assert old

    assert api_client.patch(url, {"config": {"greeting": "bonjour"}}, format="json").status_code == 200
    wait_until(lambda: set(cache_values(plugin["id"], project.id, "teardowns")) >= old, message="teardowns")

    post_batch(client, project.api_token, [event("second", "user-9")])
    stored = wait_for_events(project.id, 1, event="second")[0]["properties"]
    assert stored["greeting"] == "bonjour"
    assert stored["instance"] not in old

    # A second change tears down only the new instances, and never an old one again.
    assert api_client.patch(url, {"enabled": False}, format="json").status_code == 200
    new = set(cache_values(plugin["id"], project.id, "setups")) - old
    wait_until(lambda: set(cache_values(plugin["id"], project.id, "teardowns")) >= old | new, message="teardowns")
    time.sleep(0.5)  # let any stray duplicate arrive before counting
    teardowns = cache_values(plugin["id"], project.id, "teardowns")
    assert sorted(teardowns) == sorted(old | new)  # each instance exactly once


def _start_beat(worker_env: dict, workdir: Path, index: int, period: int) -> subprocess.Popen:
    log = open(workdir / f"beat-{index}.log", "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bklog_app",
            "beat",
            "--loglevel",
            "INFO",
            "--schedule",
            str(workdir / f"beat-{index}-schedule"),
            "--pidfile",
            "",
        ],
        cwd=ROOT,
        env={**worker_env, "PLUGIN_SCHEDULE_MINUTE_SECONDS": str(period)},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def test_run_every_minute_runs_once_per_period_with_two_beats(
    project, celery_worker, worker_env, local_plugin, install
):
    """Two beats, as on two nodes: one leads and sends (bklog_app/beat_leader.py). Killed outright,
    it stops renewing its lease, and the other takes over; no period runs twice across the
    hand-over, where the once-per-period lock still guards."""
    period = 2
    path = local_plugin(
        """
        import time

        def run_every_minute(meta):
            meta.cache.lpush("runs", [time.time()])
        """
    )
    plugin, config = install({"source_type": "local", "path": path})
    assert plugin["capabilities"]["scheduled_tasks"] == ["run_every_minute"]

    workdir = Path(tempfile.mkdtemp(prefix="beats-"))
    env = {**worker_env, "BEAT_LEADER_TTL_SECONDS": "3", "BEAT_LEADER_CHECK_SECONDS": "0.5"}
    beats = [_start_beat(env, workdir, index, period) for index in range(2)]
    logs = [workdir / f"beat-{index}.log" for index in range(2)]
    try:
        wait_until(lambda: len(cache_values(plugin["id"], project.id, "runs")) >= 2, timeout=60, message="two runs")
        leaders = [index for index, log in enumerate(logs) if "this beat leads" in log.read_text()]
        assert len(leaders) == 1, "exactly one beat leads"
        [leader] = leaders
        follower = 1 - leader
        assert "Sending due task" not in logs[follower].read_text()
        os.killpg(beats[leader].pid, 9)
        beats[leader].wait(20)
        wait_until(lambda: "this beat leads" in logs[follower].read_text(), timeout=30, message="a new leader")
        runs_before = len(cache_values(plugin["id"], project.id, "runs"))
        wait_until(
            lambda: len(cache_values(plugin["id"], project.id, "runs")) >= runs_before + 2,
            timeout=60,
            message="two runs sent by the new leader",
        )
    finally:
        for beat in beats:
            if beat.poll() is None:
                os.killpg(beat.pid, 15)
                beat.wait(20)
    time.sleep(1)  # runs already queued finish

    runs = cache_values(plugin["id"], project.id, "runs")
    periods = [
        entry.message.split("starting ")[1]
        for entry in PluginLogEntry.objects.filter(
            plugin_config_id=config["id"], message__startswith="run_every_minute for"
        )
    ]
    assert len(periods) == len(runs)  # every run is logged with its period...
    assert len(set(periods)) == len(periods)  # ...and no period ran twice
    assert "Sending due task plugins-run-every-minute" in logs[follower].read_text()

"""The cost curves' logic without the stack (bench/scale.py): sizes and their option, the
posthog-js shaped bodies, the per-plugin cost, the `scale.<curve>` tables, the plots."""

import gzip
import io
from contextlib import redirect_stdout
from types import SimpleNamespace

import orjson
import pytest

from bench import results, scale
from bench.__main__ import _parse
from bench.scenarios import PLUGIN_CHAIN
from bklog_app.models import Project
from bklog_app.plugins.models import PluginConfig
from pipeline.ingestion.elements import elements_to_chain
from tests.factories import api_client_for, make_project


def test_full_sizes_are_the_issues_and_quick_ones_small():
    full = scale.ScaleSizes.for_mode(quick=False)
    assert full.persons == [10_000, 1_000_000, 5_000_000]
    assert full.projects == [1, 1_000, 10_000]
    assert full.chain == [0, 2, 5, 10]
    assert full.events == [10_000_000]
    quick = scale.ScaleSizes.for_mode(quick=True)
    assert max(quick.persons) < min(full.persons[1:])
    assert max(quick.events) <= 1_000_000


def test_an_option_overrides_one_curves_sizes_in_increasing_order():
    args = _parse(["scale_persons", "--quick", "--scale", "persons=1_000_000,20000", "--scale", "chain=0,1"])
    sizes = scale.ScaleSizes.for_mode(args.quick, dict(args.scale))
    assert sizes.persons == [20_000, 1_000_000]
    assert sizes.chain == [0, 1]
    assert sizes.projects == scale.ScaleSizes.for_mode(quick=True).projects
    assert args.scenarios == ["scale_persons"]


@pytest.mark.parametrize(
    "option, message",
    [
        (
            "people=10",
            "unknown curve 'people': write CURVE=N,N,... with CURVE one of persons, projects, chain, web, events",
        ),
        (
            "persons=10k",
            "'persons=10k': the sizes must be whole numbers separated by commas, e.g. persons=10000,100000",
        ),
        ("persons=", "'persons=': the sizes must be whole numbers separated by commas, e.g. persons=10000,100000"),
        ("persons=-5", "'persons=-5': every size of the persons curve must be at least 1"),
        ("projects=0,10", "'projects=0,10': every size of the projects curve must be at least 1"),
        ("chain=-1,2", "'chain=-1,2': every size of the chain curve must be at least 0"),
    ],
)
def test_a_bad_scale_option_is_refused_with_what_to_write(option, message, capsys):
    with pytest.raises(SystemExit) as exited:
        _parse(["scale_persons", "--scale", option])
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip().endswith(f"argument --scale: {message}")


def test_scale_curves_are_scenarios_but_not_in_the_default_run(capsys):
    assert _parse([]).scenarios == []
    with pytest.raises(SystemExit):
        _parse(["scale_planets"])
    assert "unknown scenario scale_planets; choose from single," in capsys.readouterr().err
    assert set(scale.ScaleCurves(scale.ScaleSizes.for_mode(True)).scenarios()) == set(scale.SCENARIO_NAMES)


def test_a_web_body_is_gzipped_json_of_ten_events_as_posthog_js_sends():
    body = scale.web_body("tok", 3, "web-3")
    events = orjson.loads(gzip.decompress(body))
    assert len(events) == scale.WEB_EVENTS_PER_REQUEST
    assert [e["event"] for e in events].count("$autocapture") == scale.WEB_EVENTS_PER_REQUEST - 2
    assert events[0]["event"] == "$pageview"
    for event in events:
        assert event["properties"]["token"] == "tok"
        assert event["properties"]["distinct_id"] == "web-3"
        assert "distinct_id" not in event  # posthog-js puts it in the properties
    click = events[1]["properties"]
    assert click["$event_type"] == "click"
    assert [element["tag_name"] for element in click["$elements"]][-1] == "body"
    chain = elements_to_chain(click["$elements"])
    assert chain.startswith("button.btn.btn-primary.cta:")
    assert chain.count(";") == len(click["$elements"]) - 1
    assert "compression=gzip-js" in scale.WEB_PATH


def test_seeded_traffic_only_uses_stored_distinct_ids():
    events = scale.spread_events("t", 400, lambda draw: scale.seeded_distinct_id(7, draw % 50), seed=1)
    ids = {event["distinct_id"] for event in events}
    assert ids <= {scale.seeded_distinct_id(7, i) for i in range(50)}
    assert len(ids) > 40  # spread, not one hot id
    assert sum("$set" in event for event in events) == 100


def _chain_point(plugins, events_per_s, cpu):
    return {"plugins": plugins, "events_per_s": events_per_s, "ingestion_cpu_ms_per_event": cpu}


def test_cost_per_plugin_is_against_the_empty_chain():
    points = scale.per_plugin_costs([_chain_point(0, 10_000.0, 0.10), _chain_point(5, 5_000.0, 0.35)])
    assert points[0]["us_per_plugin_per_event"] is None
    assert points[1]["us_per_plugin_per_event"] == 20.0  # (200 - 100 µs) / 5
    assert points[1]["ingestion_cpu_ms_per_plugin_per_event"] == 0.05


def test_the_fitted_cost_is_the_slope_over_every_length():
    table = [_chain_point(n, 1e6 / (100 + 20 * n), 0.1 + 0.03 * n) for n in (0, 2, 5, 10)]
    fitted = scale.fitted_cost_per_plugin(table)
    assert fitted == {"us_per_plugin_per_event_fit": 20.0, "ingestion_cpu_ms_per_plugin_per_event_fit": 0.03}
    assert scale.fitted_cost_per_plugin([_chain_point(0, 100.0, None)])["us_per_plugin_per_event_fit"] is None


def _persons_run(first, second):
    return {
        "curve": "persons",
        "points": [{"persons": 10_000, "events_per_s": first}, {"persons": 100_000, "events_per_s": second}],
    }


def test_scale_section_is_the_median_per_size_in_the_results(tmp_path):
    runs = {
        "scale_persons": [_persons_run(1000.0, 900.0), _persons_run(3000.0, 700.0), _persons_run(2000.0, None)],
        "scale_events": [
            {
                "curve": "events",
                "points": [{"events": 1000, "first_page": {"p50_ms": 4.0, "p99_ms": 9.0}, "filtered": {"p50_ms": 2.0}}],
            }
        ],
    }
    document = results.build(runs, rss_mb={}, machine={"cores": 2}, options={})
    persons = document["scale"]["persons"]
    assert persons["table"] == [
        {"persons": 10_000, "events_per_s": 2000.0},
        {"persons": 100_000, "events_per_s": 900.0},  # the median of the runs that measured it
    ]
    assert persons["largest_vs_smallest_percent"] == 45.0
    assert len(persons["runs"]) == 3
    assert document["scale"]["events"]["table"] == [
        {
            "events": 1000,
            "first_page.p50_ms": 4.0,
            "first_page.p99_ms": 9.0,
            "filtered.p50_ms": 2.0,
            "filtered.p99_ms": None,
        }
    ]
    _, md_path = results.write(document, tmp_path)
    text = md_path.read_text()
    assert "| persons stored | events/s |\n|---:|---:|\n| 10,000 | 2,000 |\n| 100,000 | 900 |" in text
    assert "| 1,000 | 4 | 9 | 2 | - |" in text
    assert "- largest_vs_smallest_percent: 45" in text


def test_results_without_curves_have_no_scale_key():
    assert "scale" not in results.build({"batch": [{"events_per_s": 1.0}]}, rss_mb={}, machine={}, options={})


def test_each_curve_is_plotted_to_a_png_named_after_the_run(tmp_path):
    runs = {"scale_chain": [{"curve": "chain", "points": [_chain_point(n, 1e6 / (100 + 20 * n), 0.1) for n in (0, 2)]}]}
    curves = scale.section({"scale_persons": [_persons_run(1000.0, 900.0)]} | runs)
    written = scale.plot(curves, tmp_path, "20260101T000000Z")
    assert [path.name for path in written] == [
        "20260101T000000Z-scale-persons.png",
        "20260101T000000Z-scale-chain.png",
    ]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 5000


class _InProcessStack:
    """Runs `manage.py shell -c` scripts in this process, on the test database."""

    def manage(self, command: str, flag: str, script: str) -> str:
        assert (command, flag) == ("shell", "-c")
        out = io.StringIO()
        with redirect_stdout(out):
            exec(script, {})  # noqa: S102  (what `manage.py shell -c` would run)
        return out.getvalue()


def test_seeded_projects_each_get_the_two_plugin_chain(db):
    organization = make_project().organization
    client = api_client_for(organization, staff=True)
    plugin_ids = {
        builtin: client.post("/api/plugins/", {"source_type": "builtin", "builtin": builtin}, format="json").json()[
            "id"
        ]
        for builtin, _ in PLUGIN_CHAIN
    }
    ctx = SimpleNamespace(stack=_InProcessStack(), plugin_ids=plugin_ids, organization_id=organization.id)

    made = scale.seed_projects(ctx, 3, "seeded")

    assert len(made) == 3
    for pk, token in made:
        project = Project.objects.get(pk=pk)
        assert (project.api_token, project.organization_id) == (token, organization.id)
        configs = PluginConfig.objects.filter(project=project).order_by("order")
        assert [(c.plugin_id, c.order, c.enabled, c.config) for c in configs] == [
            (plugin_ids[builtin], order, True, config) for order, (builtin, config) in enumerate(PLUGIN_CHAIN)
        ]


@pytest.mark.parametrize(
    "number, label",
    [(0, "0"), (500, "500"), (2000, "2k"), (10_000, "10k"), (1_000_000, "1M"), (5_000_000, "5M"), (1234, "1234")],
)
def test_plot_axes_label_sizes_briefly(number, label):
    assert scale._short(number) == label

"""The Grafana dashboard's PromQL, run by a real Prometheus against the example app's /metrics.

Every query in docs/dashboards/grafana-feedback.json must return data, and the ratios must be
exactly what the example's scripted chat implies. This pins the metric and label names the
OpenTelemetry Prometheus exporter produces (`brixo_feedback_total`, `gen_ai_request_model`, ...)
and the query forms: a renamed label or a wrong join shows up here as an empty result, not as an
empty panel in somebody's Grafana.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

from tests._prometheus import SCRAPE_JOB, ExampleApp, PrometheusServer
from tests._services import wait_for

DASHBOARD = Path(__file__).resolve().parent.parent / "docs" / "dashboards" / "grafana-feedback.json"

#: Two blocks of the example's ten-message script per model; the ratios are those of one block.
MESSAGES_PER_MODEL = 20
#: Concrete values for Grafana's built-in variables; the window holds a few 1 s scrapes.
BUILTINS = {"__rate_interval": "30s", "__interval": "5s", "__range": "1m"}

# What the script implies (see examples/prometheus_app.py): per block of ten messages, gpt-5 has
# 8 ratings with 6 thumbs up and haiku 5 ratings with 1 up; v1 answers four messages of each
# block and never gets a thumbs up, v2 answers six.
THUMBS_UP_RATE_BY_MODEL = {"gpt-5": Fraction(6, 8), "haiku": Fraction(1, 5)}
SHARE_RATED_BY_MODEL = {"gpt-5": Fraction(8, 10), "haiku": Fraction(5, 10)}
THUMBS_UP_RATE_BY_VERSION = {"v1": Fraction(0, 5), "v2": Fraction(7, 8)}
THUMBS_UP_RATE = Fraction(7, 13)
SHARE_RATED = Fraction(13, 20)


def walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in (collapsed) rows."""
    for panel in panels:
        yield panel
        yield from walk_panels(panel.get("panels", []))


def dashboard_queries() -> dict[str, str]:
    """Panel title (plus refId when a panel has several queries) → PromQL, variables resolved."""
    dashboard = json.loads(DASHBOARD.read_text())
    values = dict(BUILTINS)
    for variable in dashboard["templating"]["list"]:
        # "All" is what a fresh import shows; each variable's allValue is the regex for it.
        values[variable["name"]] = variable["allValue"]
    queries: dict[str, str] = {}
    for panel in walk_panels(dashboard["panels"]):
        targets = panel.get("targets", [])
        for target in targets:
            key = panel["title"] if len(targets) == 1 else f"{panel['title']} {target['refId']}"
            queries[key] = resolve(target["expr"], values)
    return queries


def resolve(expr: str, values: dict[str, str]) -> str:
    """Replace `$name` and `${name}` as Grafana would; an unknown variable is a test failure."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in values, f"no value for dashboard variable ${name} in {expr!r}"
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


def by_label(result: list[tuple[dict[str, str], float]], label: str) -> dict[str, float]:
    found = {labels.get(label, ""): value for labels, value in result}
    assert len(found) == len(result), f"several series share a {label}: {result}"
    return found


def test_the_dashboard_queries_give_the_exact_feedback_ratios(tmp_path: Path) -> None:
    queries = dashboard_queries()
    assert set(queries) == {
        "Thumbs-up rate",
        "Messages rated",
        "Feedback volume by value",
        "Thumbs-up rate by model",
        "Thumbs-up rate by agent version",
        "Share of messages rated, by model",
    }

    with (
        ExampleApp(tmp_path / "app", messages_per_model=MESSAGES_PER_MODEL) as app,
        PrometheusServer(tmp_path / "prometheus", targets=[app.target]) as prometheus,
    ):
        # The app's counters are final before it serves /metrics, so once the target is up
        # and each series has a few samples (increase() needs two in its window), the
        # answers no longer change.
        wait_for(
            lambda: prometheus.scalar(f'up{{job="{SCRAPE_JOB}"}} == 1'),
            timeout=30,
            what=f"Prometheus to scrape the example app at {app.target}",
        )
        wait_for(
            lambda: prometheus.scalar(
                "min(count_over_time({__name__=~"
                '"brixo_feedback_total|brixo_messages_total"}[1m])) >= 3'
            ),
            timeout=30,
            what="three scrapes of every feedback and message series",
        )
        check_names(prometheus)
        check_variables(prometheus)
        check_panels(prometheus, queries)


def check_names(prometheus: PrometheusServer) -> None:
    """The names the dashboard relies on, as the OpenTelemetry exporter spells them."""
    up = prometheus.query('brixo_feedback_total{brixo_signal_value="thumbs_up"}')
    assert up, "no brixo_feedback_total series with brixo_signal_value=thumbs_up"
    labels = set().union(*(series for series, _ in up))
    assert {
        "brixo_signal_value",
        "brixo_signal_target",
        "gen_ai_request_model",
        "gen_ai_provider_name",
        "brixo_agent_version",
        "job",
        "instance",
    } <= labels
    total = prometheus.scalar("sum(brixo_messages_total)")
    assert total == 2 * MESSAGES_PER_MODEL


def check_variables(prometheus: PrometheusServer) -> None:
    """The template variables' label_values() queries list what the app produced."""
    dashboard = json.loads(DASHBOARD.read_text())
    found: dict[str, set[str]] = {}
    for variable in dashboard["templating"]["list"]:
        match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable["definition"])
        assert match, f"unexpected variable query {variable['definition']!r}"
        metric, label = match.groups()
        found[variable["name"]] = set(prometheus.api(f"label/{label}/values", {"match[]": metric}))
    assert found == {
        "job": {SCRAPE_JOB},
        "model": {"gpt-5", "haiku"},
        "agent_version": {"v1", "v2"},
    }


def check_panels(prometheus: PrometheusServer, queries: dict[str, str]) -> None:
    results = {title: prometheus.query(expr) for title, expr in queries.items()}
    for title, result in results.items():
        assert result, f"panel {title!r} has no data; query:\n{queries[title]}"
        assert all(math.isfinite(value) for _, value in result), (title, result)

    # Exact: ratios of the counters' current values, so the float is the correctly rounded
    # quotient of two integers, the same in Go and in Python.
    def exact(expected: dict[str, Fraction]) -> dict[str, float]:
        return {key: float(value) for key, value in expected.items()}

    assert by_label(results["Thumbs-up rate by model"], "gen_ai_request_model") == exact(
        THUMBS_UP_RATE_BY_MODEL
    )
    assert by_label(results["Share of messages rated, by model"], "gen_ai_request_model") == (
        exact(SHARE_RATED_BY_MODEL)
    )
    # v1 has ratings but no thumbs up: the panel must draw 0, not leave v1 out.
    assert by_label(results["Thumbs-up rate by agent version"], "brixo_agent_version") == exact(
        THUMBS_UP_RATE_BY_VERSION
    )
    assert results["Thumbs-up rate"] == [({}, float(THUMBS_UP_RATE))]
    assert results["Messages rated"] == [({}, float(SHARE_RATED))]

    volume = {
        (labels["brixo_signal_value"], labels["brixo_signal_target"]): value
        for labels, value in results["Feedback volume by value"]
    }
    assert set(volume) == {
        ("thumbs_up", "message"),
        ("thumbs_down", "message"),
        ("thumbs_up", "conversation"),
    }
    # Every signal was counted before the first scrape, so each series starts at its final
    # value and increase() sees no growth: the limitation docs/dashboards.md describes, and
    # why the rate panels use the counters' values instead.
    assert set(volume.values()) == {0.0}

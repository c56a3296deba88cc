"""The Grafana dashboard queries only metrics and labels the code exports.

Every PromQL expression in dashboards/codex-k8s-operator.json is parsed for
its metric selectors; each selector must name the scrape job it reads
(`$gateway_job` or `$operator_job`, since both processes export the seed's
codex_mcp_* names with different labels), and the metric and every label it
matches or groups by must exist on that process's registry. Renaming a
metric or a label in either metrics.py fails this test.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from codex_gateway.metrics import GatewayMetrics
from codex_operator.metrics import OperatorMetrics

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "dashboards" / "codex-k8s-operator.json"

# Labels added by the scrape (or by histogram_quantile), not by the code.
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "le"})
JOB_VARIABLES = {"$gateway_job": "gateway", "$operator_job": "operator"}

# PromQL words that are neither functions nor metrics.
KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or"})
KEYWORDS |= {"unless", "offset", "inf", "nan"}

IDENT = r"[A-Za-z_:][A-Za-z0-9_:]*"
SELECTOR = re.compile(rf"(?<![\w:.$])({IDENT})\s*\{{([^{{}}]*)\}}")
MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
RANGE = re.compile(r"\[[^\]]*\]")
BARE_IDENT = re.compile(rf"(?<![\w:.$])({IDENT})(?![\w:])(?!\s*\()")
LABEL_VALUES = re.compile(rf"^label_values\(\s*({IDENT})\s*(?:\{{([^{{}}]*)\}})?\s*,\s*({IDENT})\s*\)$")


# ---------------------------------------------------------------- registries


def exported(metrics: Any) -> dict[str, frozenset[str]]:
    """Sample name -> label names, for every series `metrics` can export.

    The family names and types come from ``registry.collect()``; a labelled
    metric that has not been observed yet has no samples, so the sample
    names are derived from the type, and the label names are read from the
    collectors on the metrics object.
    """
    registry: CollectorRegistry = metrics.registry
    labels_of: dict[str, frozenset[str]] = {}
    for collector in vars(metrics).values():
        if isinstance(collector, MetricWrapperBase):
            for family in collector.describe():
                labels_of[family.name] = frozenset(collector._labelnames)
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    names: dict[str, frozenset[str]] = {}
    for family in registry.collect():
        assert family.type in suffixes, f"{family.name}: add the sample names of a {family.type}"
        assert family.name in labels_of, f"{family.name} is not an attribute of {type(metrics).__name__}"
        for suffix in suffixes[family.type]:
            names[family.name + suffix] = labels_of[family.name]
        for sample in family.samples:  # the unlabelled ones, as exported
            if not sample.name.endswith("_created"):
                assert sample.name in names, sample.name
    return names


@pytest.fixture(scope="module")
def sources() -> dict[str, dict[str, frozenset[str]]]:
    return {"gateway": exported(GatewayMetrics()), "operator": exported(OperatorMetrics())}


# ---------------------------------------------------------------- PromQL


@dataclass
class Selector:
    metric: str
    matchers: dict[str, tuple[str, str]]  # label -> (operator, value)


@dataclass
class Query:
    selectors: list[Selector] = field(default_factory=list)
    grouping: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)


def parse_matchers(text: str) -> tuple[dict[str, tuple[str, str]], str | None]:
    matchers: dict[str, tuple[str, str]] = {}
    pos = 0
    while pos < len(text.strip()):
        m = MATCHER.match(text, pos)
        if not m:
            return matchers, f"cannot parse matchers {text[pos:]!r}"
        matchers[m.group(1)] = (m.group(2), m.group(3))
        pos = m.end()
    return matchers, None


def parse(expr: str) -> Query:
    query = Query()
    for m in SELECTOR.finditer(expr):
        matchers, problem = parse_matchers(m.group(2))
        if problem:
            query.problems.append(problem)
        query.selectors.append(Selector(m.group(1), matchers))
    rest = SELECTOR.sub(lambda m: f" {m.group(1)} ", expr)
    if "{" in rest or "}" in rest:
        query.problems.append("a selector without a metric name")
    rest = STRING.sub(" ", RANGE.sub(" ", rest))
    for m in GROUPING.finditer(rest):
        query.grouping |= {label.strip() for label in m.group(2).split(",") if label.strip()}
    rest = GROUPING.sub(" ", rest)
    rest = re.sub(rf"\boffset\s+-?{IDENT}", " ", rest)
    selected = {s.metric for s in query.selectors}
    for m in BARE_IDENT.finditer(rest):
        word = m.group(1)
        if word.lower() not in KEYWORDS and word not in selected:
            query.problems.append(f"{word}: a metric without a {{job=...}} selector")
    return query


def check(expr: str, sources: dict[str, dict[str, frozenset[str]]]) -> list[str]:
    """What is wrong with one panel expression (empty: nothing)."""
    query = parse(expr)
    problems = list(query.problems)
    if not query.selectors:
        problems.append("no metric selector")
    for sel in query.selectors:
        op, job = sel.matchers.get("job", ("", ""))
        source = JOB_VARIABLES.get(job) if op in ("=", "=~") else None
        if source is None:
            problems.append(f'{sel.metric}: needs job=~"$gateway_job" or job=~"$operator_job"')
            continue
        names = sources[source]
        if sel.metric not in names:
            elsewhere = [s for s, n in sources.items() if sel.metric in n]
            hint = f" (exported by the {elsewhere[0]})" if elsewhere else ""
            problems.append(f"{sel.metric}: not a series of the {source}{hint}")
            continue
        labels = names[sel.metric]
        for label in (set(sel.matchers) | query.grouping) - TARGET_LABELS:
            if label not in labels:
                problems.append(f"{sel.metric} ({source}) has no label {label!r}; it has {sorted(labels)}")
    return problems


# ---------------------------------------------------------------- dashboard


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row holds its panels


def exprs(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            yield f"{panel['title']} / {target.get('refId')}", target["expr"]


def test_dashboard_identity(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "codex-k8s-operator"
    assert dashboard["title"]
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert "id" not in dashboard or dashboard["id"] is None  # importable into any Grafana
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("gateway_job", "operator_job", "namespace"):
        assert name in variables


def test_rows(dashboard: dict[str, Any]) -> None:
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == ["Gateway", "Sessions", "Operator"]


def test_panels_have_titles_unique_ids_and_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    panels = list(all_panels(dashboard))
    ids = [p.get("id") for p in panels]
    assert all(isinstance(i, int) for i in ids)
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for panel in panels:
        assert panel.get("title"), f"panel {panel.get('id')} has no title"
        if panel["type"] == "row":
            continue
        assert panel.get("datasource", {}).get("uid") == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", {}).get("uid") == "${datasource}", panel["title"]
            assert target.get("expr"), panel["title"]


def test_no_hard_coded_datasource(dashboard: dict[str, Any]) -> None:
    def walk(node: Any) -> Iterator[Any]:
        if isinstance(node, dict):
            if isinstance(node.get("datasource"), dict | str):
                yield node["datasource"]
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    for ds in walk(dashboard):
        uid = ds.get("uid") if isinstance(ds, dict) else ds
        assert uid in ("${datasource}", "-- Grafana --"), ds


def test_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in all_panels(dashboard):
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_every_expression_uses_exported_metrics_and_labels(
    dashboard: dict[str, Any], sources: dict[str, dict[str, frozenset[str]]]
) -> None:
    problems = [f"{where}: {p}" for where, expr in exprs(dashboard) for p in check(expr, sources)]
    assert not problems, "\n".join(problems)


def test_every_metrics_file_is_queried(
    dashboard: dict[str, Any], sources: dict[str, dict[str, frozenset[str]]]
) -> None:
    used = {(s.metric, s.matchers["job"][1]) for _, expr in exprs(dashboard) for s in parse(expr).selectors}
    assert {job for _, job in used} == set(JOB_VARIABLES)
    assert len(used) >= 20


def test_variable_queries(dashboard: dict[str, Any], sources: dict[str, dict[str, frozenset[str]]]) -> None:
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        m = LABEL_VALUES.match(text.strip())
        assert m, f"{variable['name']}: expected label_values(metric{{...}}, label), got {text!r}"
        metric, matchers, label = m.groups()
        owners = [names[metric] for names in sources.values() if metric in names]
        assert owners, f"{variable['name']}: {metric} is not exported"
        used = {label} | set(parse_matchers(matchers or "")[0])
        for name in used - TARGET_LABELS:
            assert any(name in labels for labels in owners), f"{variable['name']}: {metric} has no {name}"


# ---------------------------------------------------------------- the checker itself

GW = 'job=~"$gateway_job"'
OP = 'job=~"$operator_job"'


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        (f"sum(rate(codex_gateway_tool_call_total{{{GW}}}[5m]))", "not a series of the gateway"),
        (f"sum(rate(codex_gateway_tool_calls{{{GW}}}[5m]))", "not a series of the gateway"),
        (f"codex_operator_ready{{{GW}}}", "(exported by the operator)"),
        (f"sum by (tol) (rate(codex_gateway_tool_calls_total{{{GW}}}[5m]))", "no label 'tol'"),
        (f'codex_gateway_cache_lookups_total{{{GW}, outcome="hit"}}', "no label 'outcome'"),
        (f"sum by (model) (rate(codex_mcp_cost_usd_total{{{OP}}}[5m]))", "no label 'model'"),
        (f"max by (phase) (codex_mcp_active_sessions_total{{{OP}}})", "no label 'phase'"),
        ("max(codex_operator_ready)", "without a {job=...} selector"),
        ('codex_operator_ready{namespace="x"}', "needs job"),
        (f"histogram_quantile(0.9, rate(codex_mcp_response_time_seconds{{{GW}}}[5m]))", "not a series"),
    ],
)
def test_the_checker_catches(expr: str, problem: str, sources: dict[str, dict[str, frozenset[str]]]) -> None:
    assert any(problem in p for p in check(expr, sources)), check(expr, sources)


@pytest.mark.parametrize(
    "expr",
    [
        f"histogram_quantile(0.99, sum by (le, method, name) (rate(codex_mcp_response_time_seconds_bucket{{{GW}}}[$__rate_interval])))",
        f"sum by (provider) (increase(codex_mcp_cost_usd_total{{{OP}}}[1h]))",
        f'sum(rate(codex_gateway_cache_lookups_total{{{GW}, result="hit"}}[5m])) / sum(rate(codex_gateway_cache_lookups_total{{{GW}}}[5m]))',
        f"sum(rate(codex_operator_runner_pods_started_total{{{OP}}}[5m])) * 60",
    ],
)
def test_the_checker_accepts(expr: str, sources: dict[str, dict[str, frozenset[str]]]) -> None:
    assert check(expr, sources) == []

"""The PromQL reader the deploy checks rely on: metric names, and nothing else, come out."""

from __future__ import annotations

import pytest

from tests.deploy.promql import PromqlError, label_values_query, names


def test_functions_ranges_variables_and_grouping_are_not_metrics() -> None:
    found = names(
        "histogram_quantile(0.9, sum by (action, le) (rate(tracker_vod_call_seconds_bucket"
        '{job=~"$job", instance=~"$instance"}[$__rate_interval])))'
    )
    assert found.metrics == {"tracker_vod_call_seconds_bucket"}
    assert found.matched == {"tracker_vod_call_seconds_bucket": {"job", "instance"}}
    assert found.grouped == {"action", "le"}


def test_binary_operators_keywords_numbers_and_offsets() -> None:
    found = names(
        "sum without (instance) (rate(a_total[15m] offset 5m)) / ignoring (reason) group_left "
        "sum(rate(b_total[15m:1m])) > 1e-3 and on() vector(0) or count(c == 1) unless d @ end()"
    )
    assert found.metrics == {"a_total", "b_total", "c", "d"}
    assert found.grouped == {"instance", "reason"}


def test_strings_may_hold_anything() -> None:
    found = names('x{reason=~"rate(y)|z{}", route!="/jobs/{job_id}", a=\'b\\\'c\'} > bool 0')
    assert found.metrics == {"x"}
    assert found.matched == {"x": {"reason", "route", "a"}}


@pytest.mark.parametrize(
    "expr",
    ["rat(x[5m])", 'sum({job="tracker"})', "max(x{job=~})", "histogram_quantil(0.5, x)"],
)
def test_a_typo_is_an_error_not_a_metric(expr: str) -> None:
    with pytest.raises(PromqlError):
        names(expr)


def test_grafana_label_values_queries() -> None:
    parsed = label_values_query('label_values(tracker_http_requests_total{job=~"$job"}, instance)')
    assert parsed is not None
    found, label = parsed
    assert (found.metrics, label) == ({"tracker_http_requests_total"}, "instance")
    assert label_values_query("sum(x)") is None

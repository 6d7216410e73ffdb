"""What a PromQL expression names: its metrics, the labels it matches on, the labels it groups by.

Enough of a lexer for the checks in this folder, not a parser: strings, ranges, matcher blocks and
grouping lists are taken out first; of the identifiers left, the ones called are functions (an
unknown one is an error, so a typo cannot pass for a metric), keywords are skipped, and the rest
are metric names. Grafana's variables (`$job`, `${job}`, `$__rate_interval`) only ever stand in
strings and ranges here, so they go with them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# prometheus.io/docs/prometheus/latest/querying/functions/ and .../operators/ (Prometheus 2 and 3).
_FUNCTIONS = """
    abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil changes clamp
    clamp_max clamp_min cos cosh count_over_time day_of_month day_of_week day_of_year
    days_in_month deg delta deriv double_exponential_smoothing exp floor histogram_avg
    histogram_count histogram_fraction histogram_quantile histogram_stddev histogram_stdvar
    histogram_sum holt_winters hour idelta increase info irate label_join label_replace
    last_over_time ln log10 log2 mad_over_time max_over_time min_over_time minute month pi
    predict_linear present_over_time quantile_over_time rad rate resets round scalar sgn sin sinh
    sort sort_by_label sort_by_label_desc sort_desc sqrt stddev_over_time stdvar_over_time
    sum_over_time tan tanh time timestamp vector year
"""
_AGGREGATIONS = """
    avg bottomk count count_values group limit_ratio limitk max min quantile stddev stdvar sum topk
"""
GROUPING = ("by", "without", "on", "ignoring", "group_left", "group_right")
FUNCTIONS = frozenset(_FUNCTIONS.split())
AGGREGATIONS = frozenset(_AGGREGATIONS.split())
KEYWORDS = frozenset(["and", "or", "unless", "atan2", "bool", "offset", "inf", "nan", *GROUPING])

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_RANGE = re.compile(r"\[[^\]]*\]")
_OFFSET = re.compile(r"\boffset\s+-?[\w$]+|@\s*[\w.$]+(?:\(\))?")
_GROUPING = re.compile(r"\b(" + "|".join(GROUPING) + r")\s*\(([^()]*)\)")
_SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)?\s*\{([^{}]*)\}")
_MATCHER = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)\s*\"\"")
_TOKEN = re.compile(r"\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|0x[0-9a-fA-F]+|([A-Za-z_:][\w:]*)|\S")


class PromqlError(ValueError):
    pass


@dataclass
class Names:
    metrics: set[str] = field(default_factory=set)
    # metric -> label names it is matched on, as written (`exported_job` stays so)
    matched: dict[str, set[str]] = field(default_factory=dict)
    grouped: set[str] = field(default_factory=set)  # by / without / on / ignoring / group_x


def names(expr: str) -> Names:
    """The metrics, matched labels and grouping labels of one PromQL expression."""
    found = Names()
    text = _STRING.sub('""', expr)
    text = _RANGE.sub(" ", text)
    text = _OFFSET.sub(" ", text)
    for _, labels in _GROUPING.findall(text):
        found.grouped.update(label.strip() for label in labels.split(",") if label.strip())
    text = _GROUPING.sub(" ", text)
    for metric, matchers in _SELECTOR.findall(text):
        if not metric or metric in KEYWORDS | FUNCTIONS | AGGREGATIONS:
            raise PromqlError(f"a selector without a metric name in {expr!r}")
        found.matched.setdefault(metric, set()).update(_MATCHER.findall(matchers))
        rest = _MATCHER.sub("", matchers).replace(",", "").strip()
        if rest:
            raise PromqlError(f"cannot read the matchers {{{matchers}}} in {expr!r}")
    text = _SELECTOR.sub(lambda m: f" {m[1]} ", text)
    tokens = [(m[0], m[1]) for m in _TOKEN.finditer(text)]
    for n, (_, identifier) in enumerate(tokens):
        if not identifier:
            continue
        called = n + 1 < len(tokens) and tokens[n + 1][0] == "("
        if called:
            if identifier not in FUNCTIONS | AGGREGATIONS:
                raise PromqlError(f"unknown function {identifier}() in {expr!r}")
        elif identifier not in KEYWORDS:
            found.metrics.add(identifier)
    return found


def label_values_query(query: str) -> tuple[Names, str] | None:
    """Grafana's `label_values(selector, label)` variable query: the selector's names and the
    label; None for any other query."""
    match = re.fullmatch(r"\s*label_values\((.*),\s*([A-Za-z_]\w*)\s*\)\s*", query)
    if match is None:
        return None
    return names(match[1]), match[2]

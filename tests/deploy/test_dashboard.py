"""deploy/grafana/tracker.json: one question per row, the overview first, every panel titled,
described, with a unit and the dashboard's data source; every query is PromQL promtool accepts."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from tests import programs
from tests.deploy.files import dashboard, dashboard_targets, panels, variable_queries

# Grafana's variables, as a query would be sent with the defaults chosen.
VARIABLES = {"$__rate_interval": "1m", "$job": "tracker", "$instance": ".*"}


def test_rows_ask_one_question_each_overview_first() -> None:
    rows = [panel for panel in dashboard()["panels"] if panel["type"] == "row"]
    assert rows[0]["title"].startswith("Overview")
    assert all(row["title"].endswith("?") for row in rows)
    assert len({row["title"] for row in rows}) == len(rows)
    overview = dashboard()["panels"][1 : dashboard()["panels"].index(rows[1])]
    assert overview
    assert all(panel["type"] == "stat" for panel in overview)


def test_every_panel_has_a_title_a_description_a_unit_and_the_chosen_data_source() -> None:
    seen_ids: set[int] = set()
    for panel in panels():
        assert panel["id"] not in seen_ids
        seen_ids.add(panel["id"])
        if panel["type"] == "row":
            continue
        title = panel["title"]
        assert len(panel["description"]) > 20, title
        assert panel["fieldConfig"]["defaults"]["unit"], title
        assert panel["targets"], title
        for target in [panel, *panel["targets"]]:
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"


def test_panels_do_not_overlap_on_the_grid() -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in dashboard()["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, (panel["title"], taken.get((x, y)))
                taken[(x, y)] = panel["title"]


def test_every_query_is_promql(tmp_path: Path) -> None:
    """promtool parses each query (variables given their defaults) as a recording rule."""
    pattern = re.compile("|".join(re.escape(name) for name in VARIABLES))
    records = []
    for n, (title, target) in enumerate(dashboard_targets()):
        expr = pattern.sub(lambda m: VARIABLES[m[0]], target["expr"])
        assert "$" not in expr, (title, expr)
        records.append({"record": f"dashboard:query_{n}", "expr": expr})
    for n, query in enumerate(variable_queries()):
        inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", query)
        assert inner is not None, query
        records.append(
            {
                "record": f"dashboard:variable_{n}",
                "expr": pattern.sub(lambda m: VARIABLES[m[0]], inner[1]),
            }
        )
    rules = tmp_path / "dashboard.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    done = subprocess.run(
        [programs.promtool(), "check", "rules", str(rules)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(records)} rules found" in done.stdout

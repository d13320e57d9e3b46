"""The examples run end to end on 3 replicas, 4 workers in 3 regions and a real MinIO."""

from __future__ import annotations

import csv
import io
import json
import statistics

from .conftest import EXAMPLES, PipelineCluster


def test_energy_example_produces_the_expected_report(pipelines: PipelineCluster):
    manifest = (EXAMPLES / "energy-pipeline.yaml").read_text()
    assert pipelines.submit(manifest).created
    status = pipelines.wait_finished("energy-report")
    assert status.phase == "Succeeded", [(t.step, t.phase, t.message) for t in status.tasks]
    assert status.progress == "3/3"
    for task in status.tasks:
        assert task.phase == "Succeeded"
        assert task.region in ("aws", "gcp", "azure")
        assert task.worker_id.startswith(task.region)
        assert task.attempt == 1
        assert task.log_key.endswith("/log.txt")

    # Recompute the report from the raw readings, independently of the steps' code.
    readings = csv.DictReader(
        io.StringIO(pipelines.output(status, "generate", "readings.csv").decode())
    )
    by_site: dict[str, list[tuple[int, float]]] = {}
    for row in readings:
        by_site.setdefault(row["site"], []).append((int(row["hour"]), float(row["kwh"])))
    assert sorted(by_site) == ["plant-a", "plant-b", "plant-c"]
    assert all(len(rows) == 168 for rows in by_site.values())

    summary = json.loads(pipelines.output(status, "analyze", "summary.json"))
    assert {site: s["anomaly_hours"] for site, s in summary.items()} == {
        "plant-a": [],
        "plant-b": [30, 100],
        "plant-c": [77],
    }
    for site, rows in by_site.items():
        clean = [kwh for hour, kwh in rows if hour not in summary[site]["anomaly_hours"]]
        assert abs(summary[site]["total_kwh"] - sum(clean)) < 0.01
        assert abs(summary[site]["mean_kwh"] - statistics.fmean(clean)) < 0.01

    report = list(
        csv.DictReader(
            io.StringIO(pipelines.output(status, "report", "energy_report.csv").decode())
        )
    )
    assert [r["site"] for r in report] == ["plant-c", "plant-b", "plant-a"]  # by total, descending
    assert [int(r["anomalies"]) for r in report] == [1, 2, 0]
    markdown = pipelines.output(status, "report", "report.md").decode()
    assert "Largest consumer: **plant-c**" in markdown


def test_ml_example_trains_two_models_and_names_the_better(pipelines: PipelineCluster):
    assert pipelines.submit((EXAMPLES / "ml-pipeline.yaml").read_text()).created
    status = pipelines.wait_finished("digits-models", timeout=180)
    assert status.phase == "Succeeded", [(t.step, t.phase, t.message) for t in status.tasks]
    assert status.progress == "5/5"

    metrics = json.loads(pipelines.output(status, "evaluate", "metrics.json"))
    assert set(metrics) == {"logistic_regression", "random_forest"}
    for m in metrics.values():
        assert m["test_images"] == 450  # a quarter of scikit-learn's 1,797 digits
        assert 0.9 < m["accuracy"] <= 1.0
    best = max(metrics, key=lambda name: (metrics[name]["accuracy"], metrics[name]["macro_f1"]))
    report = pipelines.output(status, "report", "report.md").decode()
    assert f"Better model: **{best}**" in report
    # Both models were trained on the split, from different attempts' outputs.
    keys = {o.key for t in status.tasks for o in t.outputs if o.name == "model.pkl"}
    assert len(keys) == 2

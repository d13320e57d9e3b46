"""Energy pipeline steps: generate readings -> analyze per site -> report.

Readings are synthetic but deterministic (seeded), with a daily load curve per site and a few
injected faults, so the report's content can be checked exactly.
"""

from __future__ import annotations

import csv
import json
import math
import random
import statistics

from pipeorch_worker.sdk import StepContext


def generate_readings(ctx: StepContext) -> None:
    sites: list[str] = ctx.params["sites"]
    hours: int = ctx.params["hours"]
    rng = random.Random(ctx.params.get("seed", 0))
    anomalies: dict[str, list[int]] = ctx.params.get("anomalies", {})
    with ctx.output("readings.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["hour", "site", "kwh"])
        for index, site in enumerate(sites):
            base = 120.0 + 40.0 * index
            for hour in range(hours):
                daily = 0.25 * base * math.sin(2 * math.pi * (hour % 24 - 6) / 24)
                kwh = base + daily + rng.gauss(0, 3.0)
                if hour in anomalies.get(site, []):
                    kwh += 10 * base  # a meter fault: far outside the normal range
                writer.writerow([hour, site, f"{kwh:.3f}"])
    print(f"generated {hours} hourly readings for {len(sites)} sites")


def analyze_sites(ctx: StepContext) -> None:
    threshold: float = ctx.params.get("zscore", 4.0)
    readings: dict[str, list[tuple[int, float]]] = {}
    with ctx.input("generate/readings.csv").open() as f:
        for row in csv.DictReader(f):
            readings.setdefault(row["site"], []).append((int(row["hour"]), float(row["kwh"])))
    summary = {}
    for site, rows in sorted(readings.items()):
        values = [kwh for _, kwh in rows]
        median = statistics.median(values)
        # Robust spread (median absolute deviation), so the faults do not hide themselves.
        mad = statistics.median(abs(v - median) for v in values) * 1.4826
        anomalies = [hour for hour, kwh in rows if mad and (kwh - median) / mad > threshold]
        clean = [kwh for hour, kwh in rows if hour not in anomalies]
        peak_hour, peak = max(((h, v) for h, v in rows if h not in anomalies), key=lambda r: r[1])
        summary[site] = {
            "hours": len(rows),
            "total_kwh": round(sum(clean), 3),
            "mean_kwh": round(statistics.fmean(clean), 3),
            "peak_kwh": round(peak, 3),
            "peak_hour": peak_hour,
            "anomaly_hours": anomalies,
        }
        print(f"{site}: {len(rows)} readings, {len(anomalies)} anomalies")
    ctx.output("summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))


def write_report(ctx: StepContext) -> None:
    summary: dict[str, dict] = json.loads(ctx.input("analyze/summary.json").read_text())
    ranked = sorted(summary.items(), key=lambda item: -item[1]["total_kwh"])
    with ctx.output("energy_report.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["rank", "site", "total_kwh", "mean_kwh", "peak_kwh", "peak_hour", "anomalies"]
        )
        for rank, (site, s) in enumerate(ranked, start=1):
            writer.writerow(
                [rank, site, s["total_kwh"], s["mean_kwh"], s["peak_kwh"], s["peak_hour"],
                 len(s["anomaly_hours"])]
            )  # fmt: skip
    lines = [
        "# Energy report",
        "",
        "| site | total kWh | peak kWh (hour) | anomalies |",
        "|---|---|---|---|",
    ]
    for site, s in ranked:
        hours = ", ".join(str(h) for h in s["anomaly_hours"]) or "none"
        lines.append(
            f"| {site} | {s['total_kwh']:,.1f} | {s['peak_kwh']:.1f} ({s['peak_hour']}) | {hours} |"
        )
    biggest = ranked[0][0]
    lines += ["", f"Largest consumer: **{biggest}**."]
    ctx.output("report.md").write_text("\n".join(lines) + "\n")
    print(f"report written: {len(ranked)} sites, largest consumer {biggest}")

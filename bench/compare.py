"""pipeorch's pipeline figures beside Celery, Dask and Ray measured on the same machine, with
the ratios and the targets: `python -m bench.compare` (after the two benchmarks ran)."""

from __future__ import annotations

import json
from typing import Any

from bench.peers import load_peers
from bench.raft_bench import RESULTS

#: (key, label, unit, higher is better, target)
MEASURES: tuple[tuple[str, str, str, bool, float], ...] = (
    ("chain_ms_per_step", "(A) chain", "ms/step", False, 3.0),
    ("fanout_steps_per_second", "(B) fan-out", "steps/s", True, 1500.0),
    ("roundtrip_p50_ms", "(C) round trip p50", "ms", False, 5.0),
    ("roundtrip_p99_ms", "(C) round trip p99", "ms", False, float("nan")),
)


def _figures(result: dict[str, Any]) -> dict[str, float]:
    figures = {key: float(result[key]) for key, *_ in MEASURES if key in result}
    figures["chain_ms_per_step"] = float(result["chain_seconds_per_step"]) * 1e3
    return figures


def table() -> str:
    ours_path = RESULTS / "pipelines-loopback.json"
    if not ours_path.exists():
        return "no pipeline benchmark results yet: python -m bench.pipeline_bench"
    ours = _figures(json.loads(ours_path.read_text()))
    peers = {name: _figures(r) for name, r in load_peers().get("peers", {}).items()}
    names = ["pipeorch", *peers]
    rows = [f"{'':22}" + "".join(f"{n:>10}" for n in names) + f"{'target':>9}  ratio to peers"]
    for key, label, unit, higher, target in MEASURES:
        cells = [ours[key], *(p[key] for p in peers.values())]
        line = f"{label + ' ' + unit:22}" + "".join(f"{v:>10.1f}" for v in cells)
        line += f"{target:>9.0f}" if target == target else f"{'':>9}"
        ratios = []
        for name, p in peers.items():
            # > 1 means pipeorch is better on this measure.
            ratio = ours[key] / p[key] if higher else p[key] / ours[key]
            ratios.append(f"{name} x{ratio:.2f}")
        rows.append(line + "  " + ", ".join(ratios))
    met = [
        label
        for key, label, _, higher, target in MEASURES
        if target == target and (ours[key] >= target if higher else ours[key] <= target)
    ]
    rows.append(f"targets met: {', '.join(met) or 'none'} (x>1: pipeorch better)")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())

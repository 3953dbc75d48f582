"""Bar chart of scenario 1 from bench/results/latest.json → docs/images/bench-hot-path.png.

python bench/chart.py [results.json] [out.png]      (needs the `bench` extra: matplotlib)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "bench/results/latest.json"
    target = Path(sys.argv[2]) if len(sys.argv) > 2 else REPO / "docs/images/bench-hot-path.png"
    results = json.loads(source.read_text())
    rows = results["results"]["1"]["saturated"]
    names = [name for name, row in rows.items() if isinstance(row, dict)]
    rps = [rows[name]["rps"] for name in names]
    p99 = [rows[name]["p99_ms"] for name in names]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    left.barh(names, rps, color="#3b6ea5")
    left.set_xlabel("thousand requests per second (median)")
    left.xaxis.set_major_formatter(lambda x, _pos: f"{x / 1000:g}")
    left.set_xlim(0, max(rps) * 1.2)
    left.invert_yaxis()
    for y, value in enumerate(rps):
        left.text(value, y, f" {value:,.0f}", va="center", fontsize=8)
    right.barh(names, p99, color="#c0504d")
    right.set_xlabel("p99 latency, ms (median)")
    right.set_xlim(0, max(p99) * 1.2)
    right.invert_yaxis()
    right.set_yticklabels([])
    for y, value in enumerate(p99):
        right.text(value, y, f" {value:.2f}", va="center", fontsize=8)
    cpu = results["machine"]["cpu"]
    fig.suptitle(f"Hot path, ~100-byte responses, wrk 50 connections ({cpu}, 2 cores)")
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=110)
    print(target)


if __name__ == "__main__":
    main()

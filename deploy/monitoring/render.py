"""Each dashboard's panels drawn from a real Prometheus's answers: the local stack under visitors' traffic, scraped by
Debian's Prometheus (testsupport.monitoring), every panel's queries asked over the run as Grafana would ask them,
and drawn with matplotlib (Grafana itself is not installable here) into data/dashboards/<uid>.png.

    python -m deploy.monitoring.render [--rounds 6] [--out data/dashboards]
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from deploy.monitoring import dashboards, generate
from testsupport.monitoring import monitored_stack, traffic
from testsupport.prometheus import Prometheus

UNITS = {"reqps": "per second", "percentunit": "share", "ms": "milliseconds", "s": "seconds", "short": "count",
         "none": ""}


def legend(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template) or template


def draw(board: dict[str, Any], prometheus: Prometheus, start: float, end: float, path: Path) -> None:
    panels = board["panels"]
    rows = math.ceil(len(panels) / 2)
    figure, axes = plt.subplots(rows, 2, figsize=(16, 3.6 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        unit = panel["fieldConfig"]["defaults"].get("unit", "")
        for target in panel["targets"]:
            for series in prometheus.query_range(target["expr"], start, end, 1):
                xs = [float(t) - start for t, _ in series["values"]]
                ys = [float(v) for _, v in series["values"]]
                ax.plot(xs, ys, label=legend(target.get("legendFormat", ""), series["metric"]))
        ax.set_title(panel["title"], fontsize=10)
        ax.set_xlabel("seconds into the run", fontsize=8)
        ax.set_ylabel(UNITS.get(unit, unit), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=6, loc="upper left")
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    figure.suptitle(f"{board['title']} (Prometheus {prometheus.url}, local stack)", fontsize=12)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6, help="rounds of visitors' traffic")
    parser.add_argument("--out", default="data/dashboards", help="where the PNGs go")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="render-") as work, monitored_stack(Path(work)) as stack:
        start = time.time()
        traffic(stack, args.rounds)
        stack.prometheus.wait_for_scrapes(stack.prometheus.scrapes_of_every_target() + 5)
        end = time.time()
        for spec in dashboards.DASHBOARDS:
            board = json.loads((generate.GENERATED / "dashboards" / f"{spec.uid}.json").read_text())
            path = Path(args.out) / f"{spec.uid}.png"
            draw(board, stack.prometheus, start, end, path)
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

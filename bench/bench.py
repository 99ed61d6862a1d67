"""`make bench`: ingest, transform and load at scale 10, each beside PostgreSQL's own bulk-copy floor, then
the whole pipeline (`totesys run`) at scale 10 and 20 beside the psql \\copy floor (bench/pipeline_bench.py).

Seeds a throwaway cluster once (``bench.common``), then runs each stage's benchmark module. Figures are
printed and written to bench/results/latest.json (git-ignored); docs/BENCHMARKS.md records the reported ones.
Not a test: nothing here asserts a time.
"""
import json
import os
import platform
import sys

from bench import (cdc_bench, dashboard_bench, deletes_bench, ingest_bench, pipeline_bench,
                   transform_load_bench)
from bench.common import SCALE, seeded_cluster


def main():
    # The stages' EMF metric lines (utils.metrics) would bury the figures; children inherit this.
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    with seeded_cluster() as ctx:
        results = {"scale": SCALE, "seed_seconds": ctx["seed_seconds"], "rows_seeded": ctx["rows_seeded"],
                   "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                              f"Python {platform.python_version()}",
                   "ingest": ingest_bench.run(ctx), "transform_load": transform_load_bench.run(ctx),
                   "dashboard": dashboard_bench.run(ctx), "deletes": deletes_bench.run(ctx),
                   "cdc": cdc_bench.run(ctx),
                   "pipeline": {"scale 10": pipeline_bench.run(ctx, incremental=True)}}
    with seeded_cluster(20) as ctx20:
        results["pipeline"]["scale 20"] = pipeline_bench.run(ctx20, incremental=False, label="20")
    (ctx["workdir"] / "latest.json").write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

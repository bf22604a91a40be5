"""How every stage's time and memory grow with the number of users (issue 16), through `python -m jobs.benchmark`.

    python -m jobs.benchmark scale --sizes 10000,100000,1000000 [--models [popularity,comirec_sa+align+contrast]]
        [--cap 20000] [--name bench-scale] [key=value ...]
    python -m jobs.benchmark stage-memory --stage semantic --ingest data.dataset=generic data.path=... run_id=...

For each size it writes a synthetic data set (rec_core.data.synthetic, seed `--data-seed`) in the
generic format under `<output_dir>/<name>/data-<users>-<items>/` (kept and reused while the same
size and seed are asked for again). The catalogue is `--items` (20,000) at every size, so the growth
measured is growth in users: scoring every user against every item (validation, evaluation, export)
is users x items, which a catalogue growing with the users would make quadratic. Then it runs the whole refresh on it in a child process
(`python -m jobs.refresh data.dataset=generic ...`: encoder backends, `--models`, one epoch of at
most `--cap` training samples (`train.max_samples_per_epoch`); evaluation is not capped: every
valid and test user is ranked against the whole catalogue), and samples every `--interval` seconds

- the driver's resident memory (RSS of the refresh process), and
- the total: RSS summed over the driver and all its descendants (local Ray's GCS, raylet, workers,
  the Ray Train and vLLM actors). Shared pages (Ray's object store, mapped by every worker that
  reads it) count once per process that maps them, so the total is an upper bound.

The runs share one output_dir, so every size finds the item-text embedding cache warm, as a
nightly run does (the catalogue is the same at every size: the generator draws the items first);
a warm-up run of the smallest size fills it first and is left out of the figures (`--no-warmup`
skips it).

With `--nodes 2` the refresh joins a local cluster of two Ray nodes (each `ray start` with
`--node-cpus` CPUs, the cluster of the two-node integration test) through RAY_ADDRESS, to show that
no stage assumes one node; the nodes' processes are added to the total.

Each sample is given to the stage running at its time (the manifest's `started`, which has one-second
resolution, and `seconds`). Per stage it prints wall time, peak driver RSS, peak total RSS, the rows
it wrote and the rows of the earlier tables it could read (the manifest's `inputs`), then the
growth exponent b of time = a * users^b fitted by least squares on log-log over the sizes (goal
b <= 1.15 for every stage), the Arrow size of the interactions table beside the peak driver RSS
(goal < 2 GiB at 1M users), and one JSON line per size and one for the fits.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from jobs.benchmarks import local_folder
from rec_core.run.config import load_config

MIB = 2 ** 20


class MemorySampler(threading.Thread):
    """Samples (time, driver RSS, total RSS of the driver and its descendants) of process `pid`."""

    def __init__(self, pid: int, interval: float, cluster_pids: tuple[int, ...] = ()):
        super().__init__(daemon=True)
        self.pid, self.interval, self.samples, self.cluster_pids = pid, interval, [], cluster_pids
        self._stopping = threading.Event()

    def run(self) -> None:
        import psutil

        try:
            driver = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._stopping.is_set():
            try:
                processes = [driver, *driver.children(recursive=True)]
                own = driver.memory_info().rss
            except psutil.NoSuchProcess:
                return
            for pid in self.cluster_pids:  # the nodes of a --nodes cluster: not the driver's descendants
                try:
                    processes += psutil.Process(pid).children(recursive=True)
                except psutil.NoSuchProcess:
                    pass
            total = 0
            for process in processes:
                try:
                    total += process.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            self.samples.append((time.time(), own, total))
            self._stopping.wait(self.interval)

    def stop(self) -> list[tuple[float, int, int]]:
        self._stopping.set()
        self.join()
        return self.samples


def stage_figures(manifest: dict, samples: list[tuple[float, int, int]]) -> dict[str, dict]:
    """Per stage of a finished run: seconds, peak driver / total RSS (MiB) in its interval, rows."""
    table_rows = {name: count for record in manifest["stages"].values()
                  for name, count in (record.get("rows") or {}).items() if isinstance(count, int)}
    figures = {}
    for stage, record in manifest["stages"].items():
        if record.get("status") != "done":
            continue
        start = datetime.datetime.fromisoformat(record["started"]).timestamp()
        end = start + float(record["seconds"]) + 1.0  # `started` is rounded down to the second
        inside = [(own, total) for at, own, total in samples if start <= at <= end]
        outputs = {path.split("/")[0] for path in record.get("outputs", [])}
        inputs = {path.split("/")[0] for path in record.get("inputs", {})}
        figures[stage] = {
            "seconds": record["seconds"],
            "peak_driver_rss_mib": round(max(own for own, _ in inside) / MIB, 1) if inside else None,
            "peak_total_rss_mib": round(max(total for _, total in inside) / MIB, 1) if inside else None,
            "rows_out": sum(count for name, count in (record.get("rows") or {}).items()
                            if name in outputs and isinstance(count, int)),
            "rows_in": sum(table_rows.get(name, 0) for name in inputs),
        }
    return figures


def growth_exponents(sizes: list[int], per_size: list[dict[str, dict]]) -> dict[str, float]:
    """b of seconds = a * users^b per stage (least squares on logs), over the sizes where it ran."""
    exponents = {}
    for stage in dict.fromkeys(stage for figures in per_size for stage in figures):
        points = [(users, figures[stage]["seconds"]) for users, figures in zip(sizes, per_size)
                  if stage in figures and figures[stage]["seconds"] > 0]
        if len(points) >= 2:
            x, y = np.log([p[0] for p in points]), np.log([p[1] for p in points])
            exponents[stage] = round(float(np.polyfit(x, y, 1)[0]), 3)
    return exponents


def run_size(users: int, root: Path, args, cluster=None) -> dict:
    from jobs.synthetic import write_synthetic

    data = root / f"data-{users}-{args.items}"
    stamp = data / "synthetic.json"
    if not (stamp.is_file() and json.loads(stamp.read_text()).get("seed") == args.data_seed):
        generated = write_synthetic(data, users, items=args.items, seed=args.data_seed)
        stamp.write_text(json.dumps(generated))
    generated = json.loads(stamp.read_text())
    run_id = f"scale-{users}-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    command = [sys.executable, "-m", "jobs.refresh", *args.overrides,  # the benchmark's own keys come last
               "data.dataset=generic", f"data.path={data}", f"output_dir={root / 'runs'}", f"run_id={run_id}",
               f"models={args.models}", "train.epochs=1", f"train.max_samples_per_epoch={args.cap}",
               "publish.enabled=false"]
    print(f"\n== {users} users: {generated['interactions']} interactions, {generated['items']} items; "
          f"{' '.join(command[1:])}", flush=True)
    began = time.perf_counter()
    env = {**(cluster.env if cluster else os.environ), "PYTHONUNBUFFERED": "1"}
    if cluster:
        env["RAY_ADDRESS"] = cluster.address
    process = subprocess.Popen(command, env=env)
    sampler = MemorySampler(process.pid, args.interval, tuple(node.pid for node in cluster.nodes) if cluster else ())
    sampler.start()
    code = process.wait()
    samples = sampler.stop()
    seconds = round(time.perf_counter() - began, 1)
    if code != 0:
        raise SystemExit(f"the refresh at {users} users ended with exit code {code}")
    run_root = root / "runs" / run_id
    manifest = json.loads((run_root / "manifest.json").read_text())
    import pyarrow.parquet as pq

    return {"users": users, "interactions": generated["interactions"], "items": generated["items"],
            "run": str(run_root), "wall_seconds": seconds,
            "interactions_arrow_mib": round(pq.read_table(run_root / "interactions").nbytes / MIB, 1),
            "peak_driver_rss_mib": round(max((own for _, own, _ in samples), default=0) / MIB, 1),
            "peak_total_rss_mib": round(max((total for _, _, total in samples), default=0) / MIB, 1),
            "stages": stage_figures(manifest, samples)}


def print_size(result: dict) -> None:
    print(f"{result['users']} users: {result['wall_seconds']} s, peak driver RSS {result['peak_driver_rss_mib']} MiB "
          f"(interactions table {result['interactions_arrow_mib']} MiB in Arrow), peak total RSS "
          f"{result['peak_total_rss_mib']} MiB")
    print(f"  {'stage':40s} {'seconds':>9} {'driver MiB':>11} {'total MiB':>10} {'rows in':>11} {'rows out':>10}")
    for stage, row in result["stages"].items():
        print(f"  {stage:40s} {row['seconds']:>9} {row['peak_driver_rss_mib']!s:>11} {row['peak_total_rss_mib']!s:>10} "
              f"{row['rows_in']:>11} {row['rows_out']:>10}")


def scale_benchmark(args) -> None:
    sizes = sorted(int(size) for size in args.sizes.split(","))
    config = load_config(None, list(args.overrides))
    root = local_folder(config, args.name, "scale")
    root.mkdir(parents=True, exist_ok=True)
    cluster = None
    if args.nodes > 1:
        from rec_core.run.local_cluster import LocalCluster

        cluster = LocalCluster(root / "nodes.log", head_cpus=args.node_cpus)
        for _ in range(args.nodes - 1):
            cluster.add_node(cpus=args.node_cpus, resources="{}")
        print(f"{args.nodes}-node local Ray cluster at {cluster.address}, {args.node_cpus} CPUs per node", flush=True)
    results = []
    try:
        if args.warmup:
            print(f"warm-up at {sizes[0]} users (fills the shared caches; not measured)", flush=True)
            run_size(sizes[0], root, args, cluster)
        for users in sizes:
            result = run_size(users, root, args, cluster)
            print_size(result)
            print(json.dumps({"benchmark": "scale", "nodes": args.nodes, **result}), flush=True)
            results.append(result)
    finally:
        if cluster:
            cluster.close()
    exponents = growth_exponents([r["users"] for r in results], [r["stages"] for r in results])
    print(f"\ngrowth exponent of time in users ({sizes[0]}..{sizes[-1]}; goal <= 1.15):")
    for stage, exponent in exponents.items():
        print(f"  {stage:40s} {exponent:>6}{'' if exponent <= 1.15 else '   over'}")
    print(json.dumps({"benchmark": "scale", "sizes": sizes, "items": args.items, "models": args.models, "cap": args.cap,
                      "growth_exponents": exponents}))


def stage_memory(args) -> None:
    """One stage alone (`python -m jobs.<stage> <overrides>`, after `jobs.ingest` with --ingest):
    its wall time, its driver's peak RSS and the peak total (driver and descendants: local Ray's
    processes, the Ray Train workers), sampled every --interval seconds. A stage alone holds
    less than inside the refresh process, where earlier stages' imports and allocator residue stay;
    it measures a change to one stage in minutes where the refresh at 1M takes twenty."""
    if args.ingest:
        subprocess.run([sys.executable, "-m", "jobs.ingest", *args.overrides], check=True)
    began = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", f"jobs.{args.stage}", *args.overrides])
    sampler = MemorySampler(process.pid, args.interval)
    sampler.start()
    code = process.wait()
    samples = sampler.stop()
    if code != 0:
        raise SystemExit(f"jobs.{args.stage} ended with exit code {code}")
    figures = {"benchmark": "stage-memory", "stage": args.stage, "seconds": round(time.perf_counter() - began, 1),
               "peak_driver_rss_mib": round(max((own for _, own, _ in samples), default=0) / MIB, 1),
               "peak_total_rss_mib": round(max((total for _, _, total in samples), default=0) / MIB, 1)}
    print(f"jobs.{args.stage}: {figures['seconds']} s, peak driver RSS {figures['peak_driver_rss_mib']} MiB, "
          f"peak total RSS {figures['peak_total_rss_mib']} MiB")
    print(json.dumps(figures))


def add_commands(commands) -> None:
    alone = commands.add_parser("stage-memory", help="one stage alone: wall time, peak driver and total RSS")
    alone.add_argument("--stage", required=True, choices=["ingest", "semantic", "synthesize", "crowd_semantic",
                                                          "describe", "train", "evaluate", "export", "report"])
    alone.add_argument("--ingest", action="store_true", help="run jobs.ingest first (same overrides)")
    alone.add_argument("--interval", type=float, default=0.25, help="seconds between memory samples")
    alone.add_argument("overrides", nargs="*", help="key=value config overrides (data.*, output_dir, run_id ...)")
    alone.set_defaults(run=stage_memory)
    bench = commands.add_parser("scale", help="every stage's time and memory against the number of users")
    bench.add_argument("--sizes", default="10000,100000,1000000", help="user counts, comma-separated")
    bench.add_argument("--models", default="[popularity,comirec_sa+align+contrast]", help="the models of every run")
    bench.add_argument("--cap", type=int, default=20000, help="training samples per epoch (one epoch)")
    bench.add_argument("--items", type=int, default=20000, help="catalogue size, the same at every size")
    bench.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic data")
    bench.add_argument("--no-warmup", dest="warmup", action="store_false",
                       help="measure the first size with cold caches (no warm-up run)")
    bench.add_argument("--interval", type=float, default=0.5, help="seconds between memory samples")
    bench.add_argument("--name", default="bench-scale", help="folder under output_dir (data kept, runs added)")
    bench.add_argument("--nodes", type=int, default=1,
                       help="1: the refresh starts local Ray; more: it joins a local cluster of this many nodes "
                            "(rec_core.run.local_cluster), whose processes count in the total memory")
    bench.add_argument("--node-cpus", type=int, default=1, help="CPUs of each node of a --nodes cluster")
    bench.add_argument("overrides", nargs="*", help="key=value config overrides of every run")
    bench.set_defaults(run=scale_benchmark)

"""Distillation benchmarks (ALKDRec, issue 13), through `python -m jobs.benchmark <name>`.

    python -m jobs.benchmark distill --dataset sessions-hetrec-ml --config configs/sessions-hetrec-ml.yaml \
        --seeds 5 --teachers encoder[,llm] [--budgets 100,250,1000] [--name hetrec-alkd]
    python -m jobs.benchmark selection-cost --pool 1000000 --budget 500

`distill` trains, per run (seed 2026 + i: initialisation, sampling and the selection draws; one
split), the teacher `<base>`, the student `<base>+student` and the distilled students of the paper's
table: for each teacher backend of `--teachers` the ALKDRec policy and the random / easiest /
hardest / binary ablations, distillation of the conventional teacher's own lists (`.teacher`), and
the budget curve (`--budgets`, beside the configured `distill.budget`). All share the run's teacher
and student, so every difference is the distillation's. It prints the comparison table
(Recall/NDCG@5/10/20 mean ± std), each model paired per session against the student with bootstrap
95% CIs, the share of the student-teacher R@10 gap each distilled student closes, and per run the
distill stage's figures (selection, teacher-backend list quality, LLM calls and tokens).

`selection-cost` times the policy's draws on a synthetic pool (difficulties from a normal
distribution): seconds for `--budget` draws from `--pool` sessions, and the LLM calls that budget
costs (budget + 1 hints prompt, whatever the pool size).
"""

from __future__ import annotations

import json
import time

import numpy as np

from jobs.benchmarks import add_data_arguments
from jobs.benchmarks.models import compare_models
from rec_core.session.selection import select_sessions

ABLATIONS = ("alkdrec", "random", "easiest", "hardest", "binary")
SESSION_CUTOFFS = (5, 10, 20)


def distill_models(base: str, teachers: list[str], budgets: list[int]) -> list[str]:
    """The student first (the reference), the teacher, then the distilled variants."""
    student = f"{base}+student"
    variants = [f"{student}+distill.{policy}.{teacher}" for teacher in teachers for policy in ABLATIONS]
    variants.append(f"{student}+distill.alkdrec.teacher")
    variants += [f"{student}+distill.alkdrec.{teachers[0]}.{budget}" for budget in budgets]
    return [student, base, *variants]


def gap_closed(summary, student: str, teacher: str, metric: str = "recall", k: int = 10) -> dict[str, float]:
    """(model - student) / (teacher - student) of the mean test metric, per distilled model."""
    means = summary[(summary["metric"] == metric) & (summary["k"] == k)].set_index("model")["mean"]
    gap = means[teacher] - means[student]
    return {str(model): float((value - means[student]) / gap) if gap else float("nan")
            for model, value in means.items() if model not in (student, teacher)}


def distill_benchmark(args) -> None:
    budgets = [int(b) for b in args.budgets.split(",") if b]
    teachers = [t for t in args.teachers.split(",") if t]
    models = distill_models(args.base, teachers, budgets)
    summary = compare_models("distill", models, args.dataset, args.config, args.overrides, args.seeds, "encoder",
                             "init", args.name, cutoffs=SESSION_CUTOFFS)
    shares = gap_closed(summary, models[0], models[1])
    print("\nshare of the student-teacher Recall@10 gap closed (means over runs; the paper's FPMC ALKDRec: ~0.96):")
    for model, share in shares.items():
        print(f"  {model:44s} {share:+.3f}")
        print(json.dumps({"benchmark": "distill", "dataset": args.dataset, "model": model,
                          "recall@10_gap_closed": round(share, 4)}))


def selection_cost(args) -> None:
    difficulty = np.random.default_rng(0).normal(size=args.pool)
    for policy in ("alkdrec", "random"):
        began = time.perf_counter()
        rows, _ = select_sessions(policy, difficulty, args.budget, seed=0)
        seconds = time.perf_counter() - began
        print(json.dumps({"benchmark": "selection-cost", "policy": policy, "pool": args.pool, "budget": len(rows),
                          "seconds": round(seconds, 2), "llm_calls": len(rows) + 1}))


def add_commands(commands) -> None:
    bench = commands.add_parser("distill", help="ALKDRec's table: student, teacher, distilled students by policy, "
                                                "teacher backend and budget")
    add_data_arguments(bench, dataset_required=True)
    bench.add_argument("--base", default="fpmc", choices=["fpmc", "stamp", "gru4rec"])
    bench.add_argument("--teachers", default="encoder", help="comma-separated teacher backends: encoder, llm")
    bench.add_argument("--budgets", default="100,250,1000", help="the budget curve beside distill.budget")
    bench.add_argument("--seeds", type=int, default=5, help="runs (a headline table needs >= 5)")
    bench.add_argument("--name", default=None, help="run ids <name>-s<i>; an earlier name resumes it")
    bench.set_defaults(run=distill_benchmark)
    cost = commands.add_parser("selection-cost", help="seconds of the selection policy's draws on a large pool")
    cost.add_argument("--pool", type=int, default=1_000_000)
    cost.add_argument("--budget", type=int, default=500)
    cost.set_defaults(run=selection_cost)

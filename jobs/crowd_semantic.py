"""Stage: crowd interests -> table `synthesized_semantic_clusters`.

The synthesized users of jobs.synthesize (their max-cover item choices are their histories) go
through the same semantic grouping as individual users (jobs.semantic: the LLM stage with its
cache, validation and repair, or the text encoder; `crowd.backend`, by default `semantic.backend`). `crowd.max_synthesized`
bounds the LLM cost: 0 groups every synthesized user, N the first N (cliques are numbered best
first, by mean similarity of their members). The table has the columns of
`user_semantic_clusters` with `synth_id` in place of `user_id`.

    python -m jobs.crowd_semantic run_id=<a run with synthesized_users>
"""

from __future__ import annotations

import pyarrow as pa

from jobs.semantic import group_histories
from rec_core.run.cli import main_guard
from rec_core.run.directory import Run


def crowd_semantic(run: Run) -> pa.Table:
    synthesized = run.read_table("synthesized_users").sort_values("synth_id")
    limit = run.config["crowd"]["max_synthesized"]
    if limit:
        synthesized = synthesized.head(limit)
    histories = {int(s): list(map(int, items)) for s, items in zip(synthesized["synth_id"], synthesized["item_ids"])}
    backend = run.config["crowd"]["backend"] or run.config["semantic"]["backend"]
    return group_histories(run, "crowd_semantic", "synthesized_semantic_clusters", histories, backend,
                           id_column="synth_id")


def main(argv=None) -> None:
    main_guard(lambda config: crowd_semantic(Run(config)), argv, __doc__)


if __name__ == "__main__":
    main()

"""Stage: the run report, `<run>/report.html` (rec_core.report.html), and the `training_history` table.

`training_history` (model, epoch, loss, samples_per_s, train_seconds, valid_<metric>@<k> ...) is
every trained model's per-epoch record, read from its saved `model.json`. The report also reads
`metrics`, `user_metrics`, the semantic clusters when the run has them, the manifest, and the
`metrics` of the runs published before in the same output_dir (the trend). It runs after export
and before publish, so a run the quality gate refuses still has its report.

    python -m jobs.report run_id=<finished run>     # (re)write the report of a finished run
"""

from __future__ import annotations

import logging

import pandas as pd

from rec_core.models.names import is_neural
from rec_core.report.html import ReportInputs, render_report
from rec_core.run.cli import main_guard
from rec_core.run.config import ConfigError
from rec_core.run.directory import Run
from rec_core.run.publish import SUCCESS_MARKER, runs_of
from rec_core.storage.location import read_parquet
from rec_core.train.saved_model import load_model_config

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"


def training_history(run: Run) -> pd.DataFrame:
    rows = []
    for name in run.config["models"]:
        if is_neural(name) and (run.root / "models" / name).is_dir():
            rows += [{"model": name, **epoch} for epoch in load_model_config(run.root / "models" / name)["history"]]
    return pd.DataFrame(rows, columns=None if rows else ["model", "epoch", "loss"])


def example_clusters(clusters: pd.DataFrame, items: pd.DataFrame, users: int = 3) -> pd.DataFrame:
    """The clusters of the `users` lowest user ids, with their items' titles (what a person checks)."""
    titles = items.set_index("item_id")["title"]
    chosen = clusters[clusters["user_id"].isin(sorted(set(clusters["user_id"]))[:users])]
    return pd.DataFrame({"user": chosen["user_id"], "cluster": chosen["name"],
                         "items": ["; ".join(titles.get(int(i), "?") for i in members) for members in chosen["item_ids"]]})


def published_metrics(run: Run) -> list[tuple[str, pd.DataFrame]]:
    """(run id, metrics) of the published runs of the run's output_dir, oldest first."""
    return [(folder.name, read_parquet(folder / "metrics").to_pandas()) for folder, _ in reversed(runs_of(run.root.parent))
            if (folder / SUCCESS_MARKER).is_file() and (folder / "metrics").is_dir()]


def report(run: Run) -> None:
    if not run.stage_done("evaluate"):
        raise ConfigError(f"run {run.run_id}: evaluate not finished; the report needs its metrics")
    with run.stage("report") as info:
        history = training_history(run)
        info["rows"] = {"training_history": run.write_table("training_history", history)}
        sizes = examples = None
        if run.has_table("user_semantic_clusters"):
            clusters = run.read_table("user_semantic_clusters")
            clusters = clusters[clusters["status"] != "failed"]
            sizes = clusters["item_ids"].map(len)
            examples = example_clusters(clusters, run.read_table("items"))
        # the paired section reads test Recall only: at 1M users the whole table is 5.4M rows
        test_recall = run.read_table("user_metrics", filters=[("split", "==", "test"), ("metric", "==", "recall")])
        page = render_report(ReportInputs(run.manifest, run.read_table("metrics"), test_recall,
                                          history, sizes, examples, published_metrics(run)))
        (run.root / REPORT_FILE).write_text(page)  # atomic (Location.write_bytes)
        info["bytes"] = len(page)
    log.info("report: %s", run.root / REPORT_FILE)


def main(argv=None) -> None:
    main_guard(lambda config: report(Run(config)), argv, __doc__)


if __name__ == "__main__":
    main()

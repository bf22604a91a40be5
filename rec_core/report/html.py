"""`report.html`: one self-contained page per run (no network: plots are inline PNGs, styles inline).

Sections, each from what the run already recorded:

1. the run: data set, code version, data fingerprint, publication status, wall time;
2. test metrics of every model (the `metrics` table) and, for each model, the paired per-user
   difference with a bootstrap 95% CI against its reference (rec_core.eval.paired): a model with
   variants against its base (`comirec_sa+align+contrast` against `comirec_sa`), a base model
   against `popularity`; drawn as an interval plot;
3. the trend over the previously published runs of the same output_dir (validation and test
   metric per model, the current run last);
4. training curves per epoch (loss and validation Recall) from the `training_history` table;
5. semantic-cluster sizes, coherence and a few users' clusters (names and item titles), synthesized
   users (max-cover figures), when the run has them;
6. LLM prompts, cache hits and tokens per stage, wherever a stage recorded them;
7. stage timings.

Every text that comes from data (model names, cluster names, run ids, notes) is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")  # no display: PNGs only
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from rec_core.eval.tables import wide_metrics  # noqa: E402
from rec_core.eval.paired import paired_difference  # noqa: E402

LLM_KEYS = {"prompts", "cache_hits", "sent", "input_tokens", "output_tokens"}  # rec_core.llm.stage.LLMStats


@dataclass
class ReportInputs:
    manifest: dict
    metrics: pd.DataFrame  # model, split, metric, k, value
    user_metrics: pd.DataFrame  # model, split, user_id, metric, k, value
    training_history: pd.DataFrame  # model, epoch, loss, valid_recall@K ...
    cluster_sizes: pd.Series | None = None  # items per semantic cluster
    example_clusters: pd.DataFrame | None = None  # user, cluster (name), items (titles): for a person to judge
    published: list[tuple[str, pd.DataFrame]] = field(default_factory=list)  # (run id, metrics), oldest first


def reference_model(model: str, models: list[str]) -> str | None:
    """What a model is compared with: its base for a variant, popularity for a base."""
    base = model.split("+")[0]
    if base != model:
        return base if base in models else None
    return "popularity" if model != "popularity" and "popularity" in models else None


def paired_rows(user_metrics: pd.DataFrame, metric: str, k: int) -> pd.DataFrame:
    test = user_metrics[user_metrics["split"] == "test"]
    models = list(dict.fromkeys(test["model"]))
    rows = []
    for model in models:
        reference = reference_model(model, models)
        if reference is None:
            continue
        diff = paired_difference(test[test["model"] == model], test[test["model"] == reference], metric, k)
        rows.append({"model": model, "against": reference, "metric": diff.metric, "difference": diff.difference,
                     "low": diff.low, "high": diff.high, "relative": diff.relative, "users": diff.users})
    return pd.DataFrame(rows)


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _plot(title: str, draw) -> str:
    figure, axes = plt.subplots(figsize=(7, 3.2))
    draw(axes)
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    return f'<figure><img class="plot" alt="{html.escape(title)}" src="data:image/png;base64,{_png(figure)}"></figure>'


def _table(frame: pd.DataFrame, digits: int = 4) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = []
    for row in frame.itertuples(index=False):
        cells = "".join(f"<td>{value:.{digits}f}</td>" if isinstance(value, float)
                        else f"<td>{html.escape(str(value))}</td>" for value in row)
        body.append(f"<tr>{cells}</tr>")
    return f'<table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _llm_records(node, path=()) -> list[dict]:
    """Every LLM statistics record in the manifest's stage records, with where it was found."""
    found = []
    if isinstance(node, dict):
        if LLM_KEYS <= set(node):
            found.append({"where": " / ".join(path), **{key: node[key] for key in sorted(LLM_KEYS)},
                          "seconds": float(node.get("seconds", 0.0))})
        for key, value in node.items():
            found += _llm_records(value, (*path, str(key)))
    return found


def _night(plan: dict | None, stages: dict) -> str:
    """What an incremental night took over from the previous run (rec_core.run.incremental)."""
    if not plan:
        return "full run (no previous_run)"
    text = f"{plan['mode']} ({plan['reason']})"
    if plan["mode"] != "incremental":
        return text
    kept = [f"from run {plan['previous_run']}"]
    for stage in ("semantic", "crowd_semantic"):
        if histories := stages.get(stage, {}).get("histories"):
            kept.append(f"{stage}: {histories['kept_from_previous_run']} histories kept, {histories['grouped']} grouped")
    if cliques := stages.get("synthesize", {}).get("cliques"):
        kept.append(f"cliques: {cliques.get('kept_from_previous_run', 0)} kept, {cliques.get('cliques', 0)} new")
    warm = [name[len("train:"):] for name, record in stages.items()
            if name.startswith("train:") and str(record.get("start", "")).startswith("warm start")]
    if warm:
        kept.append(f"warm-started: {', '.join(warm)}")
    return text + "; " + "; ".join(kept)


def render_report(inputs: ReportInputs) -> str:
    manifest, metrics = inputs.manifest, inputs.metrics
    config = manifest["config"]
    k = max(config["eval"]["ks"])
    stages = manifest.get("stages", {})
    sections = []

    publish = manifest.get("publish", {})
    summary = pd.DataFrame([
        ("run", manifest["run_id"]), ("data set", config["data"]["dataset"]),
        ("code version", manifest.get("code_version", "unknown")),
        ("data sha256", manifest.get("data_fingerprint", {}).get("sha256", "not recorded")),
        ("created", manifest.get("created", "")), ("total seconds", manifest.get("total_seconds", "running")),
        ("publication", publish.get("status", "not published yet") +
         (f" (against {publish['against']})" if publish.get("against") else "")),
        ("night", _night(manifest.get("incremental"), stages)),
    ], columns=["", "value"])
    sections.append(("Run", _table(summary)))

    wide = wide_metrics(metrics, "test")
    wide = wide.reindex([m for m in config["models"] if m in wide.index]).reset_index()
    body = _table(wide)
    paired = paired_rows(inputs.user_metrics, "recall", k)
    if len(paired):
        body += f"<h3>Paired against the reference (test Recall@{k}, bootstrap 95% CI)</h3>" + _table(paired)

        def intervals(axes):
            positions = range(len(paired))
            axes.errorbar(paired["difference"], positions, fmt="o",
                          xerr=[paired["difference"] - paired["low"], paired["high"] - paired["difference"]])
            axes.axvline(0, color="grey", lw=1)
            axes.set_yticks(list(positions), [f"{m} vs {a}" for m, a in zip(paired["model"], paired["against"])],
                          fontsize=8)
            axes.set_xlabel(f"difference in test Recall@{k}")
        body += _plot(f"Paired differences, test Recall@{k}", intervals)
    sections.append(("Test metrics", body))

    history = [(run_id, frame) for run_id, frame in inputs.published if run_id != manifest["run_id"]]
    history.append((manifest["run_id"], metrics))
    trend = pd.DataFrame([{"run": run_id, "model": row.model, "split": row.split, "value": row.value}
                          for run_id, frame in history for row in frame.itertuples()
                          if row.metric == "recall" and row.k == k])
    if len(history) > 1 and len(trend):
        def trend_lines(axes):
            order = {run_id: position for position, (run_id, _) in enumerate(history)}
            for (model, split), rows in trend.groupby(["model", "split"]):
                rows = rows.sort_values("run", key=lambda runs: runs.map(order))
                axes.plot(rows["run"].map(order), rows["value"], marker="o", ls="-" if split == "test" else ":",
                          label=f"{model} ({split})")
            axes.set_xticks(range(len(history)), [run_id for run_id, _ in history], fontsize=7, rotation=20)
            axes.set_ylabel(f"Recall@{k}")
            axes.legend(fontsize=6, ncol=2)
        sections.append(("Trend over published runs", _plot(f"Recall@{k} by run (solid: test, dotted: validation)",
                                                             trend_lines)))
    else:
        sections.append(("Trend over published runs", "<p>No earlier published run in this output_dir.</p>"))

    curves = inputs.training_history
    if len(curves):
        recall_column = f"valid_recall@{k}" if f"valid_recall@{k}" in curves else None

        def losses(axes):
            for model, rows in curves.groupby("model", sort=False):
                axes.plot(rows["epoch"], rows["loss"], marker=".", label=model)
            axes.set_xlabel("epoch")
            axes.set_ylabel("training loss")
            axes.legend(fontsize=7)
        body = _plot("Training loss per epoch", losses)
        if recall_column:
            def recalls(axes):
                for model, rows in curves.groupby("model", sort=False):
                    axes.plot(rows["epoch"], rows[recall_column], marker=".", label=model)
                axes.set_xlabel("epoch")
                axes.set_ylabel(recall_column)
                axes.legend(fontsize=7)
            body += _plot(f"Validation Recall@{k} per epoch (model selection)", recalls)
        sections.append(("Training", body))

    if inputs.cluster_sizes is not None and len(inputs.cluster_sizes):
        sizes = inputs.cluster_sizes
        coherence = stages.get("semantic", {}).get("coherence", {})
        body = _plot("Items per semantic cluster", lambda axes: (axes.hist(sizes, bins=range(1, int(sizes.max()) + 2)),
                                                                 axes.set_xlabel("items")))
        body += _table(pd.DataFrame([{"clusters": len(sizes), "mean items": float(sizes.mean()),
                                      "users": json.dumps(stages.get("semantic", {}).get("users", {})),
                                      **{key: float(value) for key, value in coherence.items()
                                         if isinstance(value, (int, float))}}]))
        if inputs.example_clusters is not None and len(inputs.example_clusters):
            body += "<h3>Examples (the first training users)</h3>" + _table(inputs.example_clusters)
        sections.append(("Semantic clusters", body))
    if "synthesize" in stages:
        record = stages["synthesize"]
        figures = {"synthesized users": record.get("rows", {}).get("synthesized_users", 0),
                   "solutions": json.dumps(record.get("solutions", {})),
                   "objective / greedy": record.get("objective_over_greedy"),
                   "mean gap to bound": record.get("mean_gap_to_bound"),
                   "items per synthesized user": record.get("items_per_synthesized_user")}
        sections.append(("Synthesized users", _table(pd.DataFrame([figures]))))

    llm = pd.DataFrame(_llm_records(stages))
    sections.append(("LLM calls", _table(llm) if len(llm) else "<p>No stage of this run called the LLM.</p>"))

    timings = pd.DataFrame([{"stage": name, "seconds": float(record.get("seconds", 0.0)),
                             "status": record.get("status", "")} for name, record in stages.items()
                            if name != "report"])  # the stage writing this page has not finished
    body = _table(timings)
    if len(timings):
        def bars(axes):
            axes.barh(timings["stage"], timings["seconds"])
            axes.invert_yaxis()
            axes.set_xlabel("seconds")
            axes.tick_params(axis="y", labelsize=7)
        body = _plot("Stage wall time", bars) + body
    sections.append(("Stages", body))

    content = "".join(f'<section><h2>{html.escape(title)}</h2>{body}</section>' for title, body in sections)
    title = html.escape(f"Run {manifest['run_id']} - {config['data']['dataset']}")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 2em auto; max-width: 70em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.85em; }}
th, td {{ border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }}
th {{ background: #f0f0f0; }} td:first-child {{ text-align: left; }}
figure {{ margin: 0.5em 0; }}
</style></head>
<body><h1>{title}</h1>{content}</body></html>
"""

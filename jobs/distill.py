"""Stage: active LLM knowledge distillation (ALKDRec, arXiv 2502.15685) of session students ->
tables `distill_selections`, `llm_rankings` and the models `<base>+student+distill[.options]`.

For every distilled model of the run (its teacher `<base>` and student `<base>+student` are trained
by the train stage first):

1. the conventional teacher scores every training session's prefix (the split's prefix -> target,
   the target held out): its session difficulty and its top-`distill.candidates` items (the prefix's
   own items excluded; with `distill.target_in_candidates` the session's own target in the last
   candidate's place when the teacher missed it, as the authors' released code does);
2. `distill.budget` sessions are drawn by the model's selection policy (rec_core.session.selection:
   ALKDRec's max-min policy, binary, random, easiest, hardest) -> `distill_selections` (model,
   order, session_id, difficulty, probability: the policy's probability at the draw, teacher,
   backend);
3. the teacher backend ranks each selected session's candidates (rec_core.session.teachers: `llm`
   through the project's one LLM stage, hints first, then one ranking per session; `encoder`, the
   text re-ranking; `teacher`, its own order) -> `llm_rankings` (session_id, teacher, backend,
   ranked_ids, status ok / repaired / failed, cache_key of the LLM prompt, detail); rankings are
   shared by the models that select the same session with the same teacher and backend;
4. the student is fine-tuned on its sessions' lists on Ray Train (rec_core.train.distill_recipe),
   the sub-stage `train:<model>`, resumable like every training.

The manifest records per model the selection (sessions, the difficulty percentiles chosen), per
teacher backend the status counts, the LLM calls, tokens and seconds, and the list quality on the
ranked training sessions: the share whose target is in the backend's top 5 / 10 / 25 against the
teacher's own order on the same sessions.

Options in a model's name override the `distill` section for that model
(`fpmc+student+distill.random.llm.250`: random selection, the LLM teacher, 250 sessions).

    python -m jobs.distill                                # HetRec-ML: fpmc, fpmc+student, the distilled student
    python -m jobs.distill --config configs/sessions-hetrec-ml.yaml distill.teacher=llm
    python -m jobs.distill data.dataset=sessions-amazon-games

As a program, it runs the whole session pipeline (jobs.refresh: ingest -> train -> distill ->
evaluate -> export, resumable under one run id) on configs/sessions-hetrec-ml.yaml unless --config
names another file: HetRec-ML, FPMC's teacher, student and distilled student.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from jobs.ray_runtime import init_ray
from jobs.train import train_model
from rec_core.eval.evaluator import evaluate
from rec_core.models.names import is_distilled, parse_model_name
from rec_core.run.cli import main_guard
from rec_core.run.directory import Run, text_cache_folder
from rec_core.session.protocol import evaluation_sessions
from rec_core.session.selection import hardness_ranks, select_sessions, session_difficulty
from rec_core.session.teachers import (FAILED, HINT_LIST, HINTS_SYSTEM, OK, RANKING_SYSTEM, hints_prompt, hints_schema,
                                       list_quality, prompt_char_budget, ranking_prompt, ranking_schema, read_hints, text_rerank,
                                       validate_ranking, with_targets)
from rec_core.train.ray_train import is_session_run, load_protocol
from rec_core.train.scoring import Scorer, item_counts

log = logging.getLogger(__name__)

SESSION_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "sessions-hetrec-ml.yaml"  # without --config


def distill_settings(name: str, config: dict) -> dict:
    """The `distill` section with the model name's options on top."""
    return {**config["distill"], **dict(parse_model_name(name).distill_options)}


class TeacherView:
    """What the conventional teacher says about every training session: difficulty and candidates."""

    def __init__(self, teacher: str, run: Run, data, pool):
        scorer = Scorer(teacher, data.num_items, run.root / "models" / teacher,
                        item_counts(data.train.items, data.num_items))
        distill = run.config["distill"]
        vectors = scorer.interests(pool.histories)[:, 0]
        self.difficulty = session_difficulty(vectors, scorer.item_vectors(), pool.histories.offsets,
                                             pool.histories.items)
        # 0 = the hardest session, 1 = the easiest: where a selection sits in the pool
        self.hardness_share = (hardness_ranks(self.difficulty) - 1) / max(len(self.difficulty) - 1, 1)
        _, ranking = evaluate(scorer, pool, data.num_items, ks=[distill["candidates"]],
                              keep_top=distill["candidates"], batch_size=run.config["train"]["eval_batch_size"])
        self.candidates, self.scores = ranking.item_ids, ranking.scores
        self.targets_added = None  # with distill.target_in_candidates: the sessions whose target was added
        if distill["target_in_candidates"]:
            self.candidates, self.targets_added = with_targets(self.candidates,
                                                               pool.targets.items[pool.targets.offsets[:-1]])


def teacher_lists(view: TeacherView, rows: np.ndarray, length: int) -> list[list[int]]:
    return [list(map(int, view.candidates[r, :length])) for r in rows]


def encoder_lists(run: Run, view: TeacherView, pool, rows: np.ndarray, titles: list[str], length: int) -> list[list[int]]:
    from rec_core.text.encoder import TextEncoder

    encoder = TextEncoder(run.config["semantic"]["encoder_model"], text_cache_folder(run.config))
    item_vectors = encoder.encode(titles)
    prefixes = np.stack([item_vectors[pool.histories.sequence(r)].mean(0) for r in rows])
    ranked = text_rerank(view.candidates[rows], view.scores[rows], prefixes, item_vectors,
                         run.config["distill"]["text_weight"], length)
    return [list(map(int, r)) for r in ranked]


def llm_lists(run: Run, view: TeacherView, pool, rows: np.ndarray, titles: list[str], teacher: str):
    """(lists, statuses, cache keys, details, LLM figures): the hints prompt, then one ranking per session."""
    from rec_core.llm.prompt_cache import PromptCache
    from rec_core.llm.stage import cache_folder, run_prompts

    config, distill = run.config, run.config["distill"]
    cache = PromptCache(cache_folder(config))
    cases = np.random.default_rng([config["seed"], 7]).choice(len(pool.user_ids), min(distill["hint_cases"],
                                                                                      len(pool.user_ids)), replace=False)
    hints_system = HINTS_SYSTEM.format(max_chars=distill["hint_chars"])
    case_text, shown = hints_prompt([([titles[i] for i in pool.histories.sequence(r)],
                                      [titles[i] for i in view.candidates[r, :HINT_LIST]]) for r in cases],
                                    prompt_char_budget(config["llm"]["max_model_len"], config["llm"]["max_tokens"],
                                                       hints_system))
    hints_answer, hints_stats = run_prompts(pd.DataFrame({
        "request_id": [f"hints:{teacher}"], "system": [hints_system],
        "user": [case_text], "schema": [hints_schema(distill["hint_chars"])]}), config["llm"], cache,
        cache_flush_rows=config["llm"]["cache_flush_rows"], ray_settings=config["ray"])
    if hints_answer["error"].iloc[0]:
        hints, hints_dropped = "", f"request error: {hints_answer['error'].iloc[0][:120]}"
    else:
        hints, hints_dropped = read_hints(hints_answer["output"].iloc[0], distill["hint_chars"])
    if hints_dropped:
        log.warning("distill: the %s hints were dropped (%s); the rankings run without hints", teacher, hints_dropped)
    system = RANKING_SYSTEM.format(hints=hints or "(none)", length=distill["list_length"])
    requests = pd.DataFrame({
        "request_id": [f"rank:{int(pool.user_ids[r])}" for r in rows], "system": system,
        "user": [ranking_prompt([titles[i] for i in pool.histories.sequence(r)], view.candidates[r],
                                [titles[i] for i in view.candidates[r]]) for r in rows],
        "schema": [ranking_schema(view.candidates[r], distill["list_length"]) for r in rows]})
    answers, stats = run_prompts(requests, config["llm"], cache, cache_flush_rows=config["llm"]["cache_flush_rows"],
                                 ray_settings=config["ray"])
    answers = answers.set_index("request_id")
    lists, statuses, keys, details = [], [], [], []
    for r in rows:
        answer = answers.loc[f"rank:{int(pool.user_ids[r])}"]
        if answer["error"]:
            ranked, status, detail = [], FAILED, f"request error: {answer['error'][:120]}"
        else:
            ranked, status, detail = validate_ranking(answer["output"], view.candidates[r], distill["list_length"])
        lists.append(ranked)
        statuses.append(status)
        keys.append(answer["key"])
        details.append(detail)
    figures = {"hints": hints, "hints_dropped": hints_dropped, "hint_cases_shown": shown,
               "hints_prompt": hints_stats.as_dict(), "rankings": stats.as_dict(),
               "calls": hints_stats.prompts + stats.prompts,
               "input_tokens_per_ranking": round(stats.input_tokens / stats.sent, 1) if stats.sent else None,
               "output_tokens_per_ranking": round(stats.output_tokens / stats.sent, 1) if stats.sent else None}
    return lists, statuses, keys, details, figures


def rank_sessions(run: Run, names: list[str]) -> dict:
    """Steps 1-3 of the module docstring for every distilled model of `names`; the stage's figures."""
    config = run.config
    data = load_protocol(run.root, config["split"]["history_fraction"])
    pool = evaluation_sessions(run.read_table("session_splits"), "train")
    titles = run.read_table("items")["title"].fillna("").tolist()
    length = config["distill"]["list_length"]
    views, selections, info = {}, [], {"models": names, "selection": {}, "teachers": {}}
    for name in names:
        spec, settings = parse_model_name(name), distill_settings(name, config)
        if spec.teacher not in views:
            views[spec.teacher] = TeacherView(spec.teacher, run, data, pool)
            if views[spec.teacher].targets_added is not None:
                info.setdefault("targets_added_to_candidates", {})[spec.teacher] = views[spec.teacher].targets_added
        view = views[spec.teacher]
        rows, probabilities = select_sessions(settings["selection"], view.difficulty, settings["budget"],
                                              config["seed"], settings["mu"], settings["outcome_ratio"],
                                              settings["similar_gain"], settings["incorrect_loss"])
        selections.append(pd.DataFrame({"model": name, "order": np.arange(len(rows)),
                                        "session_id": pool.user_ids[rows], "difficulty": view.difficulty[rows],
                                        "probability": probabilities, "teacher": spec.teacher,
                                        "backend": settings["teacher"], "row": rows}))
        info["selection"][name] = {"policy": settings["selection"], "teacher": settings["teacher"],
                                   "sessions": int(len(rows)), "pool": int(len(view.difficulty)),
                                   "hardness_rank_share_quartiles": [round(float(q), 3) for q in
                                                                     np.quantile(view.hardness_share[rows], [0, 0.25, 0.5, 0.75, 1])]}
    chosen = pd.concat(selections, ignore_index=True)
    rankings = []
    for (teacher, backend), group in chosen.groupby(["teacher", "backend"], sort=True):
        view = views[teacher]
        rows = np.unique(group["row"].to_numpy())
        keys, details, figures = [""] * len(rows), [""] * len(rows), {}
        statuses = [OK] * len(rows)
        if backend == "teacher":
            lists = teacher_lists(view, rows, length)
        elif backend == "encoder":
            lists = encoder_lists(run, view, pool, rows, titles, length)
        else:
            lists, statuses, keys, details, figures = llm_lists(run, view, pool, rows, titles, teacher)
        targets = pool.targets.items[pool.targets.offsets[rows]]
        kept = [i for i, status in enumerate(statuses) if status != FAILED]
        info["teachers"][f"{teacher}/{backend}"] = {
            "sessions": int(len(rows)), "status": dict(Counter(statuses)),
            "list_quality": list_quality([lists[i] for i in kept], targets[kept]),
            "teacher_order_quality": list_quality(teacher_lists(view, rows[kept], length), targets[kept]), **figures}
        log.info("distill: %s ranked by %s: %s", teacher, backend, json.dumps(info["teachers"][f"{teacher}/{backend}"],
                                                                          default=str))
        rankings.append(pd.DataFrame({"session_id": pool.user_ids[rows], "teacher": teacher, "backend": backend,
                                      "ranked_ids": [np.asarray(r, np.int64) for r in lists], "status": statuses,
                                      "cache_key": keys, "detail": details}))
    info["rows"] = {"distill_selections": run.write_table("distill_selections", chosen.drop(columns="row")),
                    "llm_rankings": run.write_table("llm_rankings", pd.concat(rankings, ignore_index=True))}
    return info


def distill(run: Run) -> None:
    names = [name for name in run.config["models"] if is_distilled(name)]
    pending = [name for name in names if not run.stage_done(f"train:{name}")]
    if not pending:
        return
    if not is_session_run(run.root):
        raise ValueError(f"{pending[0]}: distillation needs session data (data.dataset=sessions-hetrec-ml or "
                         "sessions-amazon-games)")
    covered = run.manifest["stages"].get("distill", {}).get("models", [])
    if not run.stage_done("distill") or set(names) - set(covered):
        with run.stage("distill") as info:
            info.update(rank_sessions(run, names))
    init_ray(run.config["ray"])
    num_items = len(run.read_table("items"))
    for name in pending:
        train_model(run, name, num_items)


def main(argv=None) -> None:
    from jobs.refresh import refresh

    main_guard(refresh, argv, __doc__, default_config_file=str(SESSION_CONFIG))


if __name__ == "__main__":
    main()

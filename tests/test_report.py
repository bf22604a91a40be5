"""The run report: rendered from a small finished run, parsed, and opened in headless Chromium."""

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from rec_core.run.config import load_config
from rec_core.run.directory import Run
from rec_core.train.saved_model import save_model

HOSTILE_TITLE = '<script>alert("x")</script> & <b>Bold</b>'
MODELS = ["popularity", "sasrec", "sasrec+contrast"]


def small_run(output_dir, run_id, shift=0.0, created="2026-12-02T02:00:00+00:00"):
    run = Run(load_config(None, [f"output_dir={output_dir}", f"run_id={run_id}", f"models=[{','.join(MODELS)}]"]))
    run.manifest["created"] = created
    rng = np.random.default_rng(0)
    rows = []
    for index, model in enumerate(MODELS):
        for split in ("valid", "test"):
            values = np.clip(rng.uniform(0, 0.4, 200) + 0.05 * index + shift, 0, 1)
            for k in (10, 20, 50):
                rows += [{"model": model, "split": split, "user_id": user, "metric": metric, "k": k, "value": v}
                         for metric in ("recall", "ndcg", "hit_rate") for user, v in enumerate(values)]
    per_user = pd.DataFrame(rows)
    run.write_table("user_metrics", per_user)
    run.write_table("metrics", per_user.groupby(["model", "split", "metric", "k"], sort=False)["value"]
                    .mean().reset_index())
    run.write_table("items", pd.DataFrame({"item_id": [0, 1, 2], "title": [HOSTILE_TITLE, "Plain", "Third"]}))
    run.write_table("user_semantic_clusters", pd.DataFrame({
        "user_id": [0, 0, 1], "cluster": [0, 1, 0], "name": ["<i>named</i>", "b", "c"],
        "item_ids": [[0, 1], [2], [0, 1, 2]], "status": ["ok", "ok", "repaired"]}))
    for model in MODELS[1:]:
        history = [{"epoch": e, "loss": 5.0 - e, "valid_recall@50": 0.1 + 0.01 * e} for e in range(1, 5)]
        save_model(run.root / "models" / model, model, 3, {}, {"w": torch.zeros(2)}, history)
    run.manifest["stages"] = {
        "ingest": {"status": "done", "seconds": 1.5},
        "semantic": {"status": "done", "seconds": 30.0, "users": {"ok": 2},
                     "coherence": {"coherence": 0.4, "random_baseline": 0.2},
                     "llm": {"prompts": 10, "cache_hits": 4, "sent": 6, "errors": 0, "input_tokens": 900,
                             "output_tokens": 300, "seconds": 12.0}},
        "synthesize": {"status": "done", "seconds": 3.0, "rows": {"synthesized_users": 5},
                       "solutions": {"optimal": 5}, "objective_over_greedy": 1.01, "mean_gap_to_bound": 0.0},
        "evaluate": {"status": "done", "seconds": 4.0}}
    run.save_manifest()
    return run


class Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.tables, self.headings, self.text = [], 0, [], []
        self._in_heading = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        self.tables += tag == "table"
        self._in_heading = tag == "h2"

    def handle_data(self, data):
        self.text.append(data)
        if self._in_heading:
            self.headings.append(data)
            self._in_heading = False

    def handle_endtag(self, tag):
        pass


EXPECTED_PLOTS = 6  # paired intervals, trend, loss, validation recall, cluster sizes, stage times
EXPECTED_SECTIONS = ["Run", "Test metrics", "Trend over published runs", "Training", "Semantic clusters",
                     "Synthesized users", "LLM calls", "Stages"]


def test_the_report_has_every_section_plot_and_table_and_escapes_data(tmp_path):
    from jobs.report import REPORT_FILE, report
    from rec_core.run.publish import SUCCESS_MARKER

    yesterday = small_run(tmp_path, "yesterday", shift=-0.02, created="2026-12-01T02:00:00+00:00")
    (yesterday.root / SUCCESS_MARKER).write_text("published\n")
    run = small_run(tmp_path, "today")
    report(run)
    page = (run.root / REPORT_FILE).read_text()
    parsed = Collector()
    parsed.feed(page)
    assert parsed.headings == EXPECTED_SECTIONS
    assert len(parsed.images) == EXPECTED_PLOTS
    assert all(image["src"].startswith("data:image/png;base64,") for image in parsed.images)  # no network
    assert parsed.tables >= 7
    assert "http://" not in page and "https://" not in page
    assert "<script>" not in page and "&lt;script&gt;" in page and "&lt;i&gt;named&lt;/i&gt;" in page
    text = "".join(parsed.text)
    assert HOSTILE_TITLE in text  # shown as text, not markup
    assert "semantic / llm" in text  # the LLM record, found where the stage wrote it
    history = run.read_table("training_history")
    assert len(history) == 8 and set(history["model"]) == {"sasrec", "sasrec+contrast"}


def test_the_report_renders_in_headless_chromium(tmp_path):
    from jobs.report import REPORT_FILE, report

    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no Chromium on this machine (bin/setup test installs it where apt-get can)")
    run = small_run(tmp_path, "today")
    report(run)
    # the same page plus a probe that counts the images the browser decoded and the tables it laid out
    probe = tmp_path / "probe.html"
    probe.write_text((run.root / REPORT_FILE).read_text().replace("</body>", (
        "<script>window.addEventListener('load', () => document.body.setAttribute('data-probe', JSON.stringify("
        "{decoded: [...document.images].filter(i => i.complete && i.naturalWidth > 100).length, "
        "tables: [...document.querySelectorAll('table')].filter(t => t.offsetHeight > 0).length})));</script></body>")))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--virtual-time-budget=10000"]
    dom = subprocess.run([browser, *flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    found = re.search(r"data-probe=\"([^\"]*)\"", dom)
    assert found, "the browser did not finish loading the report"
    counts = json.loads(found.group(1).replace("&quot;", '"'))
    assert counts["decoded"] == EXPECTED_PLOTS - 1  # no earlier published run here: no trend plot
    assert counts["tables"] >= 7
    screenshot = tmp_path / "report.png"
    subprocess.run([browser, *flags, "--window-size=1280,4000", f"--screenshot={screenshot}",
                    Path(run.root / REPORT_FILE).as_uri()], capture_output=True, timeout=120)
    assert screenshot.is_file() and screenshot.stat().st_size > 10_000


def test_the_report_says_what_an_incremental_night_took_over():
    from rec_core.report.html import _night

    assert _night(None, {}) == "full run (no previous_run)"
    plan = {"mode": "incremental", "reason": "reuses what did not change", "previous_run": "nightly-20261203"}
    stages = {"semantic": {"histories": {"grouped": 13, "kept_from_previous_run": 742}},
              "synthesize": {"cliques": {"cliques": 1, "kept_from_previous_run": 71}},
              "train:sasrec": {"start": "warm start from nightly-20261203"}, "train:lightgcn": {"start": "full run"}}
    assert _night(plan, stages) == ("incremental (reuses what did not change); from run nightly-20261203; semantic: "
                                    "742 histories kept, 13 grouped; cliques: 71 kept, 1 new; warm-started: sasrec")

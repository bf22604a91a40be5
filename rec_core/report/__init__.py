"""Report: the run report a person reads (`report.html`), rendered from a run's tables and manifest.

It reads data frames and the manifest it is given and draws with matplotlib; it never imports the
models, training, the LLM stage, Ray or the jobs (jobs.report gathers the inputs).
"""

MUST_NOT_IMPORT = ("jobs", "rec_core.models", "rec_core.train", "rec_core.llm", "rec_core.interests",
                   "rec_core.crowd", "torch", "ray", "vllm")

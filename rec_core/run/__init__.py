"""Run: the typed configuration, the run directory with its manifest, and the command line every
job shares.

It never imports a stage's work (LLM, interests, crowd, training, evaluation) or the jobs, so that
reading or checking a config loads no model and starts nothing.
"""

MUST_NOT_IMPORT = ("jobs", "rec_core.llm", "rec_core.interests", "rec_core.crowd", "rec_core.train",
                   "rec_core.eval", "rec_core.models.multi_interest", "torch", "ray", "vllm")

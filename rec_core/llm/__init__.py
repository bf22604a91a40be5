"""LLM: the project's one LLM stage (Ray Data + vLLM), its content-addressed prompt cache, the
validation and repair of its answers, and the offline default model.

It knows prompts and answers only: never models, training, evaluation or the jobs.
"""

MUST_NOT_IMPORT = ("jobs", "rec_core.models", "rec_core.train", "rec_core.eval", "rec_core.interests",
                   "rec_core.crowd")

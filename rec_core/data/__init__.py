"""Data: the loaders of the built-in and generic data sets, the canonical tables, and the splits
of both protocols (ComiRec user split, ALKDRec session split).

It knows no job, run directory, model or LLM: tables in, tables out (pandas / numpy only).
"""

MUST_NOT_IMPORT = ("jobs", "rec_core.run", "rec_core.llm", "rec_core.interests", "rec_core.crowd",
                   "rec_core.models", "rec_core.train", "rec_core.eval", "ray", "torch", "vllm")

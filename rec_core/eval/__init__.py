"""Eval: the one evaluator (full ranking, history excluded, Recall / NDCG / HitRate@K).

It scores what a score function returns, whatever produced it: it never imports models,
training, the LLM stage, the semantic or crowd stages, Ray or the jobs.
"""

MUST_NOT_IMPORT = ("jobs", "rec_core.models", "rec_core.train", "rec_core.llm", "rec_core.interests",
                   "rec_core.crowd", "rec_core.run", "ray", "vllm")

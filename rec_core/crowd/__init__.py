"""Crowd (user-crowd level of the dual-level method): user cliques, the max-cover instances and
their CP-SAT solver, the synthesized users, and the contrastive loss on their clusters.

The models import its contrastive loss, so it never imports models, training, the LLM stage or jobs.
"""

MUST_NOT_IMPORT = ("jobs", "rec_core.llm", "rec_core.models", "rec_core.train", "rec_core.eval",
                   "rec_core.run", "vllm")

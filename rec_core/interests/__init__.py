"""Interests (user-individual level of the dual-level method, arXiv 2507.10917): the text-encoder
grouping backend, the coherence measure of a grouping, and the alignment of semantic clusters to
collaborative interests.

The models import its alignment loss, so it never imports models, training, the LLM stage or jobs.
"""

MUST_NOT_IMPORT = ("jobs", "rec_core.llm", "rec_core.models", "rec_core.train", "rec_core.eval",
                   "rec_core.run", "vllm")

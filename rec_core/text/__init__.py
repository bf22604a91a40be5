"""Text: the sentence-transformers text encoder with a content-addressed embedding cache, shared
by every stage that embeds text (the encoder grouping, the graph descriptions) and by every run.

It imports no other part of rec_core but rec_core.storage (its cache's part files).
"""

MUST_NOT_IMPORT = ("jobs", "rec_core.data", "rec_core.run", "rec_core.llm", "rec_core.interests",
                   "rec_core.crowd", "rec_core.graph", "rec_core.models", "rec_core.train", "rec_core.eval", "vllm")

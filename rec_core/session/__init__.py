"""Session: the session protocol of ALKDRec (arXiv 2502.15685) and its session-based backbones.

The protocol (`protocol`): sessions split 6:2:2 at random (rec_core.data.splits.split_sessions),
the last item the target, the prefix its last `split.session_max_prefix` items; full ranking, the
prefix's own items excluded (on the shipped session data a target never occurs in its own prefix:
0 of 12,323 HetRec-ML sessions). The backbones (`models`): FPMC, STAMP and GRU4Rec, each one
vector per session scored by a dot product, so the one evaluator and the training recipe serve
them as they serve the user models.

It knows no job, run directory, LLM stage or Ray: tables in, models out.
"""

MUST_NOT_IMPORT = ("jobs", "rec_core.run", "rec_core.llm", "rec_core.train", "rec_core.eval", "ray", "vllm")

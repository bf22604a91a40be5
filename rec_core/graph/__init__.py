"""Graph (GaCLLM, arXiv 2402.08859): the user-item graph of what the protocol lets a model see, the
deterministic neighbour sampling, the layer texts and prompts of the graph-hop descriptions, their
validation, the encoder aggregator, and the description diagnostic.

The LightGCN model (rec_core.models) and the describe stage (jobs.describe) import it, so it never
imports models, training, the LLM stage, the run directory or jobs.
"""

MUST_NOT_IMPORT = ("jobs", "rec_core.llm", "rec_core.models", "rec_core.train", "rec_core.eval",
                   "rec_core.run", "vllm", "torch")

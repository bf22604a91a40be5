"""Models: the torch retrieval models (Popularity, MIND, ComiRec-DR, ComiRec-SA) and the
model-name grammar (`names`, torch-free).

Serving needs no LLM: models never import the LLM stage (or Ray, vLLM, the run or the jobs).
"""

MUST_NOT_IMPORT = ("jobs", "rec_core.llm", "rec_core.run", "rec_core.train", "rec_core.eval",
                   "ray", "vllm", "transformers")

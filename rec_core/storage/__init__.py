"""Files shared by runs and by every stage: checksums, and the checksummed part files the caches
(the LLM prompt cache, the text-embedding cache) are made of. Below everything else in rec_core."""

# rec_core subpackages and heavy engines this package must never import (tests/test_import_rules.py)
MUST_NOT_IMPORT = ("jobs", "rec_core.run", "rec_core.llm", "rec_core.text", "rec_core.data", "rec_core.interests",
                   "rec_core.crowd", "rec_core.graph", "rec_core.models", "rec_core.train", "rec_core.eval",
                   "rec_core.session", "rec_core.report", "torch", "ray", "vllm")

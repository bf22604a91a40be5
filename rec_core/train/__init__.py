"""Train: the one training recipe (setup / train / cleanup), its Ray Train (TorchTrainer) wrapper
with checkpoints and resume, and saving / scoring of trained models.

Training reads tables: it never imports the LLM stage or the jobs.
"""

MUST_NOT_IMPORT = ("jobs", "rec_core.llm", "rec_core.run", "vllm", "transformers")

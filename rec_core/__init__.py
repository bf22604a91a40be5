"""rec_core: the library behind the jobs, one subpackage per pipeline responsibility.

data -> run -> llm -> interests / crowd -> models -> train -> eval. Each subpackage's `__init__`
says what it owns and lists in MUST_NOT_IMPORT what it may never import (tests/test_import_rules.py
enforces it). Nothing in rec_core imports `jobs`: the jobs wire the library, never the reverse.
"""

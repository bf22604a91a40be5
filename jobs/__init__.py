"""Entrypoints: one module per stage (`python -m jobs.<stage>`) plus the whole refresh DAG."""

"""Prefect flows: thin orchestration over the functions in the triage library."""

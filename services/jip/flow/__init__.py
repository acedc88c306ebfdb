"""Workflows: the engine adapter, the operator SDK and runners, auto-start rules."""

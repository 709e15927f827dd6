"""Evaluations of trained models: zero-shot minimal pairs."""

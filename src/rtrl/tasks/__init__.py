"""Supervised diagnostic tasks."""

"""Reporters: pure functions of a ``Report``."""

"""Orrery: agents."""

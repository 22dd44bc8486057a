"""Orrery: memory."""

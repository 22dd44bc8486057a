"""Orrery: app."""

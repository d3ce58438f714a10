"""Shared test support: tiny nets, model folders, images and command runners (no fixtures: those live in conftest.py)."""

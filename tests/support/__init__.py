"""Shared test support: helpers used by more than one test package."""

"""Data of the audit app."""

"""Data of the workflows app."""

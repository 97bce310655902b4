"""Data of the bookmarks app."""

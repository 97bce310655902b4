"""Activity types: the plug-in API (base) and the core activities (core)."""

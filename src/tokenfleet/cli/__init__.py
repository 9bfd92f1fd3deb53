"""Command-line layer: `tokenfleet ...`."""

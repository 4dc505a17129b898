"""One router per resource: edits, generate, versions, health, metrics."""

"""One router per resource: edits, generate, versions, protected, health, metrics."""

"""factpatch service: HTTP API, Redis queue, worker, version store, serving engine."""

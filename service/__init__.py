"""The REST API and dashboard (FastAPI); see the issue tracker for its state. Never imports torch."""

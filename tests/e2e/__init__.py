"""End-to-end tests: the receiver under real gunicorn with real peers (Prometheus, Chromium)."""

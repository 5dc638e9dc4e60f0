"""Adapters: the HTTP app, the RQ entry points (inbound); the Label Studio client, Redis, Prometheus (outbound)."""

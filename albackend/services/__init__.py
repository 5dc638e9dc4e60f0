"""Services: the backend's use cases (train, rescore, publish, sync, serve) and their stores and job queue."""

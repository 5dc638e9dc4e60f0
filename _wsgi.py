"""gunicorn entry point: `gunicorn _wsgi:app`. Also `python _wsgi.py --port 9090` for a dev server."""
from __future__ import annotations

import argparse

import logging

from albackend.adapters.app import create_app
from albackend.models.runtime import configure_runtime
from albackend.settings import Settings
from model import ActiveLearningModel

configure_runtime()
settings = Settings.from_env()
logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
app = create_app(settings, model_class=ActiveLearningModel)

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Run the backend with Flask's development server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9090)
    args = parser.parse_args()
    app.run(host=args.host, port=args.port, threaded=True)

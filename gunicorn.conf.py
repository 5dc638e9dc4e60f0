"""gunicorn settings for the backend; gunicorn reads this file from the working directory by itself.

Slow clients: gthread hands each connection to a thread that reads the request, so a client that sends its
headers and half a body holds a thread. With 128 threads per worker, 64 such clients leave /health and
/predict their own threads (bench/slow_clients.py measures it), and the app drops a client that stays silent
mid-body for 10 s (albackend.adapters.app.BODY_READ_TIMEOUT_S), so more of them cannot hold threads for long either.
On the open internet put a buffering reverse proxy (nginx) in front: it absorbs slow clients entirely.
"""
import os
import shutil
import tempfile

from albackend.settings import prometheus_multiproc_dir

worker_class = "gthread"
threads = 128
timeout = 300           # a worker that stops heart-beating this long is restarted
graceful_timeout = 30
keepalive = 5
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190

# /metrics sums every worker's values (prometheus_client multiprocess mode): the directory must exist, be
# empty at start and be known to the workers before they import prometheus_client.
_prom_dir = prometheus_multiproc_dir() or tempfile.mkdtemp(prefix="albackend-prometheus-")
shutil.rmtree(_prom_dir, ignore_errors=True)
os.makedirs(_prom_dir, exist_ok=True)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _prom_dir


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)

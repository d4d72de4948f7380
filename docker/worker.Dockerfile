# A GPU worker: CUDA torch from PyPI (its wheels bundle the CUDA runtime; the host needs the NVIDIA driver
# and the container toolkit). Build from the repository root:
#   docker build -f docker/worker.Dockerfile -t adapruner-worker .
FROM python:3.11-slim
ARG TORCH_VERSION=2.13.0
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
RUN pip install "torch==${TORCH_VERSION}"
COPY pyproject.toml README.md ./
COPY adapruner adapruner
COPY service service
COPY worker worker
COPY migrations migrations
RUN pip install ".[worker]" "torch==${TORCH_VERSION}" && useradd --create-home --uid 10001 adapruner \
    && mkdir -p /data /artifacts && chown adapruner /data /artifacts
USER adapruner
ENV ADAPRUNER_HOME=/data ADAPRUNER_ARTIFACTS_DIR=/artifacts ADAPRUNER_METRICS_PORT=9100
EXPOSE 9100
HEALTHCHECK --interval=30s --timeout=5s --retries=3 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9100/metrics', timeout=4)"
STOPSIGNAL SIGTERM
CMD ["adapruner", "worker"]

# The API (and the one-shot migration), without the deep-learning stack. Build from the repository root:
#   docker build -f docker/api.Dockerfile -t adapruner-api .
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY adapruner adapruner
COPY service service
COPY worker worker
COPY migrations migrations
RUN pip install ".[service,s3]" && useradd --create-home --uid 10001 adapruner && mkdir -p /data /artifacts \
    && chown adapruner /data /artifacts
USER adapruner
ENV ADAPRUNER_HOME=/data ADAPRUNER_ARTIFACTS_DIR=/artifacts
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --retries=3 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"
CMD ["adapruner", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]

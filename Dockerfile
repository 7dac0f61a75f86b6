# otel-panel-receiver: the service with its embedded defaults (memory session store, Prometheus
# pull at /metrics, logs on stdout), as a small non-root image.
#
#   docker build -t otel-panel-receiver .
#   docker run --rm -p 8080:8080 otel-panel-receiver
#
# The packages are installed at the versions of constraints.txt (the lock file). Settings are
# flags or environment variables (docs/configuration.md). tests/test_container.py runs the
# build stage's install steps and the runtime stage's command in a fresh environment, so that
# this file cannot rot even where no image builder is at hand.

ARG PYTHON=python:3.11-slim-bookworm

FROM ${PYTHON} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md LICENSE ./
COPY otel_panel_receiver ./otel_panel_receiver
RUN python -m venv /opt/otel-panel-receiver
RUN /opt/otel-panel-receiver/bin/pip install -c constraints.txt ".[redis]"

FROM ${PYTHON}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="otel-panel-receiver" \
      org.opencontainers.image.description="OpenTelemetry-native receiver for the macropower-analytics-panel Grafana plugin" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/otel-panel-receiver/otel-panel-receiver"
COPY --from=build /opt/otel-panel-receiver /opt/otel-panel-receiver
RUN useradd --system --uid 10001 --home-dir /var/lib/otel-panel-receiver --create-home receiver
USER 10001
ENV PATH=/opt/otel-panel-receiver/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DATA_DIR=/var/lib/otel-panel-receiver \
    HTTP_ADDRESS=:8080
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
ENTRYPOINT ["otel-panel-receiver"]

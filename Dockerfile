# bklog: one image for every role (see support-files/docker-entrypoint.sh).
#
#   docker build -t bklog .
#   docker run -p 8000:8000 -e DATABASE_URL=... -e REDIS_URL=... -e CLICKHOUSE_HOST=... bklog web
#
# BASE_IMAGE is any Debian-based image with python3 (3.11+) and the venv module; here, where no
# image can be pulled, support-files/build-image.sh makes one with debootstrap.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# --- build: a virtualenv with the pinned runtime requirements --------------------------------
FROM ${BASE_IMAGE} AS build
# Optional, for builds without direct index access (support-files/build-image.sh): a folder of
# wheels mounted into the build, and the CA bundle of a TLS-intercepting proxy.
ARG PIP_FIND_LINKS
ARG PIP_CERT
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY requirements.txt .
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -r requirements.txt
COPY . .
# Static files are collected here, once, so that a container needs nothing written at start
# (WhiteNoise serves them from STATIC_ROOT; /app belongs to root at run time).
ENV STATIC_ROOT=/app/staticfiles
RUN /opt/venv/bin/python -m compileall -q bklog_app pipeline manage.py gunicorn_config.py \
    && /opt/venv/bin/python manage.py collectstatic --noinput --verbosity 0

# --- runtime: the virtualenv and the code, run as an unprivileged user -----------------------
FROM ${BASE_IMAGE} AS runtime
LABEL org.opencontainers.image.title="bklog" \
      org.opencontainers.image.description="Self-hosted event-processing platform (PostHog-compatible capture)"
RUN groupadd --system --gid 10001 bklog \
    && useradd --system --uid 10001 --gid bklog --home-dir /var/lib/bklog --shell /usr/sbin/nologin bklog \
    && mkdir -p /var/lib/bklog \
    && chown bklog:bklog /var/lib/bklog
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BKLOG_HOME=/app \
    BKLOG_BIN=/opt/venv/bin \
    BKLOG_VAR_DIR=/var/lib/bklog \
    STATIC_ROOT=/app/staticfiles \
    PROMETHEUS_MULTIPROC_DIR=/tmp/bklog-metrics \
    HOST=0.0.0.0 \
    PORT=8000 \
    LOG_FORMAT=json \
    CONSUL_ENABLED=false
WORKDIR /app
USER 10001:10001
EXPOSE 8000
VOLUME ["/var/lib/bklog"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8000') + '/_health', timeout=4)"]
ENTRYPOINT ["/app/support-files/docker-entrypoint.sh"]
CMD ["web"]

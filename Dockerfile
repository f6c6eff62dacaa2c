# sloeval: the SLO sidecar image.
#
#   buildah bud --format docker -t sloeval:latest .      (or: docker build -t sloeval:latest .)
#
# BASE_IMAGE must be Debian-based with python3 (>= 3.11) and its venv module; the default is the
# official slim Python image. `make image-test` builds on a local debootstrap'd bookworm instead.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
# Behind a TLS-intercepting proxy, mount its CA bundle into the build and name it here
# (see scripts/build-image.sh); unset, pip uses the image's own CA bundle.
ARG PIP_CERT
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sloeval ./sloeval
# Only the runtime dependencies, compiled to bytecode once here; pip itself stays behind.
RUN python3 -m venv /opt/sloeval \
 && /opt/sloeval/bin/pip install --no-compile . \
 && /opt/sloeval/bin/pip uninstall --yes pip setuptools \
 && find /opt/sloeval -name '__pycache__' -prune -exec rm -rf {} + \
 && python3 -m compileall -q -j 0 /opt/sloeval/lib

FROM ${BASE_IMAGE}
ARG SLOEVAL_UID=10001
LABEL org.opencontainers.image.title="sloeval" \
      org.opencontainers.image.description="SLO evaluation sidecar: SLIs, error budgets and burn rates from Prometheus, with Telegram and email alerts." \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --gid ${SLOEVAL_UID} sloeval \
 && useradd --uid ${SLOEVAL_UID} --gid sloeval --home-dir /var/lib/sloeval --no-create-home \
      --shell /usr/sbin/nologin sloeval \
 && mkdir -p /etc/sloeval /var/lib/sloeval \
 && chown sloeval:sloeval /var/lib/sloeval \
 && chmod 0750 /var/lib/sloeval
COPY --from=build /opt/sloeval /opt/sloeval
# The shipped SLO file; mount your own directory over /etc/sloeval.
COPY config/slos.yaml /etc/sloeval/slos.yaml

ENV PATH=/opt/sloeval/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SLOEVAL_SLO_FILE=/etc/sloeval/slos.yaml \
    SLOEVAL_STATE_DIR=/var/lib/sloeval \
    SLOEVAL_HTTP_HOST=0.0.0.0 \
    SLOEVAL_HTTP_PORT=9180
USER sloeval:sloeval
WORKDIR /var/lib/sloeval
VOLUME ["/var/lib/sloeval"]
EXPOSE 9180
# Secrets: SLOEVAL_TELEGRAM_BOT_TOKEN_FILE, SLOEVAL_SMTP_PASSWORD_FILE,
# SLOEVAL_PROMETHEUS_PASSWORD_FILE, SLOEVAL_PROMETHEUS_BEARER_TOKEN_FILE (e.g. /run/secrets/...).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 CMD ["sloeval", "healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["sloeval"]
CMD ["run"]

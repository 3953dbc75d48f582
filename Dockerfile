# wakeproxy's image: Debian's Python 3.11 and tini, the package in a venv, run as uid 10001.
#
#   docker build -t wakeproxy .
#   docker run --add-host host.docker.internal:host-gateway -p 8080:8080 wakeproxy
#
# routes http://<port>-<id>.localhost:8080/ to port <port> of the Docker host (the static
# backend); `serve --backend http --backend-url ...` fronts a control plane instead, and
# docs/deploy.md shows `up` (the embedded platform) in a container. BASE is any Debian 12
# image: the tests build on one they make with debootstrap, since they reach no registry.
ARG BASE=debian:bookworm-slim

FROM ${BASE} AS python
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 ca-certificates tini \
    && rm -rf /var/lib/apt/lists/*

FROM python AS build
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/wakeproxy
ENV PATH=/opt/wakeproxy/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# For building behind a package mirror (the build stage only; none reach the image):
# e.g. --build-arg PIP_INDEX_URL=..., or PIP_NO_INDEX=1 with PIP_FIND_LINKS=<wheel dir URL>.
ARG PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_FIND_LINKS PIP_NO_INDEX PIP_TRUSTED_HOST
WORKDIR /src
# Dependencies first, read from pyproject.toml alone, so a change to the source does not
# rebuild this layer.
COPY pyproject.toml ./
RUN python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > requirements.txt \
    && pip install --requirement requirements.txt
COPY README.md LICENSE setup.py ./
COPY build_backend ./build_backend
COPY wakeproxy ./wakeproxy
# No C compiler in this stage: the package is built as pure Python (docs/design.md,
# "The compiled build of the request path").
RUN pip install --no-deps . && python3 -m compileall -q /opt/wakeproxy

FROM python
# runc runs the sandboxes of `up` and passt (pasta) gives them their outbound network,
# where the container may make namespaces and cgroups (docs/deploy.md, "up in a container").
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends passt runc \
    && rm -rf /var/lib/apt/lists/*
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="wakeproxy" \
      org.opencontainers.image.description="Wake-on-request reverse proxy for sandboxes that pause when idle" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.documentation="docs/deploy.md"
COPY --from=build /opt/wakeproxy /opt/wakeproxy
COPY config/wakeproxy.toml /etc/wakeproxy/wakeproxy.toml
# The embedded platform's data dir (`up`), the user's home.
RUN install -d -o 10001 -g 10001 -m 0700 /var/lib/wakeproxy
# A numeric user, so Kubernetes' runAsNonRoot can verify it without a passwd lookup.
USER 10001:10001
ENV PATH=/opt/wakeproxy/bin:$PATH \
    WAKEPROXY_CONFIG=/etc/wakeproxy/wakeproxy.toml \
    WAKEPROXY_PROXY_LISTEN=0.0.0.0:8080 \
    WAKEPROXY_BACKEND_STATIC_HOST=host.docker.internal \
    WAKEPROXY_PLATFORM_DATA_DIR=/var/lib/wakeproxy \
    HOME=/var/lib/wakeproxy
# The admin listener (/metrics is unauthenticated) stays on loopback, where the health
# check reaches it; publish it for Prometheus or probes with
# WAKEPROXY_ADMIN_LISTEN=0.0.0.0:9091 (the Kubernetes manifests do).
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["wakeproxy", "health", "--timeout", "2"]
# tini is PID 1: it forwards SIGTERM to wakeproxy and reaps orphaned children (sandbox
# processes of `up`, workers of `--workers`), so no zombie piles up.
ENTRYPOINT ["/usr/bin/tini", "--", "wakeproxy"]
CMD ["serve"]

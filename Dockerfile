# syntax=docker/dockerfile:1
# rfmcube-cdc's images, from one pinned base:
#   docker build -t rfmcube-cdc .                            # the service (target runtime)
#   docker build --target emulator -t rfmcube-emulator .     # the API emulator, for compose
#
# The base is python:3.11-slim-bookworm pinned by digest (the multi-arch
# index), so a rebuild gets the same base until someone moves the pin on
# purpose (Renovate or Dependabot can). Where the digest was read: Docker's
# official-images metadata, github.com/docker-library/repo-info,
# repos/python/remote/3.11-slim-bookworm.md at commit
# 40cdaf34215d6a292f2c62798b194d67d4b1ad55 (Python 3.11.16, Debian bookworm
# of 2026-09-18, images built 2026-09-19; 5 platforms, amd64 and arm64
# among them). It was read from that repository, not from Docker Hub itself:
# check it before a release with
#   docker buildx imagetools inspect python:3.11-slim-bookworm
ARG PYTHON_BASE=python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b

# --- the service, installed into a virtual environment ---------------------
FROM ${PYTHON_BASE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# The runtime dependencies first, exactly as locked (make lock): every file
# checked against its sha256, wheels only (slim has no compiler), nothing
# resolved here (--no-deps). This layer stays cached until the lock changes.
COPY requirements.lock.txt ./
RUN python -m venv --without-pip /opt/rfmcube-cdc \
    && pip --python /opt/rfmcube-cdc/bin/python install \
       --require-hashes --no-deps --only-binary=:all: -r requirements.lock.txt
# Then the service's distribution only: consumer and schemas (no emulator, no
# tests), with LICENSE, which its metadata names (license-files).
COPY pyproject.toml README.md LICENSE ./
COPY consumer ./consumer
COPY schemas ./schemas
# Built by the base image's own setuptools (79.0.1 in this digest, pinned with
# it) without an index, and installed without dependencies: they all came
# from the lock above.
RUN pip wheel --no-deps --no-build-isolation --no-index --wheel-dir /tmp/wheels . \
    && pip --python /opt/rfmcube-cdc/bin/python install --no-deps --no-index /tmp/wheels/*.whl

# --- the emulator (test support: its own distribution and image) -----------
FROM ${PYTHON_BASE} AS emulator-build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY emulator /src/emulator
RUN python -m venv --without-pip /opt/rfmcube-emulator \
    && pip --python /opt/rfmcube-emulator/bin/python install /src/emulator

FROM ${PYTHON_BASE} AS emulator
COPY --from=emulator-build /opt/rfmcube-emulator /opt/rfmcube-emulator
ENV PATH=/opt/rfmcube-emulator/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
EXPOSE 8081
HEALTHCHECK --interval=5s --timeout=3s --retries=12 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8081/_emulator/health', timeout=2)"]
ENTRYPOINT ["python", "-m", "emulator", "--host", "0.0.0.0", "--port", "8081"]

# --- the service's runtime image (the default target: last) -----------------
FROM ${PYTHON_BASE} AS runtime
COPY --from=build /opt/rfmcube-cdc /opt/rfmcube-cdc
ENV PATH=/opt/rfmcube-cdc/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# A fixed non-root uid (Kubernetes' runAsNonRoot checks it is not 0), and the
# store's directory created and owned by it: a volume mounted there starts
# with this ownership, so SQLite can create its files.
RUN groupadd --system --gid 10001 rfmcube \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin rfmcube \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/rfmcube-cdc
USER 10001:10001
WORKDIR /var/lib/rfmcube-cdc
VOLUME /var/lib/rfmcube-cdc
EXPOSE 8080
# /healthz on service.health_port (8080 by default); slim has no curl.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
ENTRYPOINT ["rfmcube-cdc"]
CMD ["run", "--config", "/etc/rfmcube-cdc/config.yaml"]

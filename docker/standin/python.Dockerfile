# Stand-in of python:3.11.15-slim-bookworm (PYTHON_IMAGE of docker/app/Dockerfile): Debian's
# CPython 3.11 with venv, as `python` on PATH like the official image.
ARG DEBIAN_IMAGE
FROM ${DEBIAN_IMAGE}
RUN set -eux; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3.11 python3.11-venv; \
    rm -rf /var/lib/apt/lists/*; \
    ln -s /usr/bin/python3.11 /usr/local/bin/python; \
    python -c "import sys, venv, ssl, sqlite3; print(sys.version)"
CMD ["python3"]

# Stand-in base: Debian bookworm from debootstrap (imported by build.sh as ROOTFS), plus
# ca-certificates with the build machine's own CA certificates (build.sh copies them to
# host-ca/): behind a TLS-inspecting proxy, apt, pip and Maven inside the containers need them.
# Local only: it is never pushed, and the CA files are not in the repository.
ARG ROOTFS
FROM ${ROOTFS}
COPY host-ca/ /usr/local/share/ca-certificates/build-host/
RUN set -eux; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates; \
    update-ca-certificates; \
    rm -rf /var/lib/apt/lists/*
# pip trusts certifi's bundle, not the system's: point it (and requests) at the system bundle
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \
    LANG=C.UTF-8
CMD ["bash"]

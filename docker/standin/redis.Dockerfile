# Stand-in of redis:7.4.2-alpine: Debian's redis-server (7.0) and redis-cli, run as the user
# redis in /data. Like the official image's entrypoint, redis-server started without a
# --protected-mode option gets --protected-mode no (without it, and without a password, Redis
# refuses clients from other containers).
ARG DEBIAN_IMAGE
FROM ${DEBIAN_IMAGE}
RUN set -eux; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server; \
    rm -rf /var/lib/apt/lists/*; \
    mkdir -p /data; chown redis:redis /data
COPY redis/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN chmod 0755 /usr/local/bin/docker-entrypoint.sh
USER redis
WORKDIR /data
EXPOSE 6379
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["redis-server"]

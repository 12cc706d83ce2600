#!/bin/sh
# Entrypoint of the stand-in Redis base (docker/standin/redis.Dockerfile): like the official
# image's, options alone mean redis-server, and redis-server without --protected-mode gets
# --protected-mode no so that other containers may connect.
set -e
if [ "${1#-}" != "$1" ]; then
  set -- redis-server "$@"
fi
if [ "$1" = redis-server ]; then
  case " $* " in
    *" --protected-mode "*) ;;
    *) set -- "$@" --protected-mode no ;;
  esac
fi
exec "$@"

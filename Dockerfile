# dind-supervisor as a drop-in for docker:dind.
#
#   docker run -d --privileged --name dind -e DOCKER_TLS_CERTDIR=/certs \
#     -v dind-certs-ca:/certs/ca -v dind-certs-client:/certs/client \
#     dind-supervisor [DOCKERD FLAGS...]
#
# Everything after the image name goes to dockerd, as with docker:dind. The
# agent runs as PID 1 (reaps orphans, forwards signals), supervises dockerd,
# issues and rotates its TLS certificates and serves /metrics /healthz /readyz
# /status on :9324. See docs/dind-image.md.
#
# The base is pinned by version tag; bump it deliberately (both stages).
# No registry is reachable on the machine the project is developed on, so this
# file is checked structurally (tests/unit/test_deploy.py) and an equivalent
# image built from a Debian rootfs is exercised in tests/e2e.

FROM docker:27.5.1-dind AS build
RUN apk add --no-cache python3
COPY pyproject.toml README.md /src/
COPY supervisor /src/supervisor
# A venv keeps our dependencies away from the image's system Python (PEP 668).
RUN python3 -m venv /opt/dind-supervisor \
 && /opt/dind-supervisor/bin/pip install --no-cache-dir --disable-pip-version-check /src \
 && /opt/dind-supervisor/bin/dind-supervisor version

FROM docker:27.5.1-dind
RUN apk add --no-cache python3
COPY --from=build /opt/dind-supervisor /opt/dind-supervisor
RUN ln -s /opt/dind-supervisor/bin/dind-supervisor /usr/local/bin/dind-supervisor

# What docker:dind sets (re-stated so the contract does not depend on the base):
# TLS on, certificates under /certs, the client half shareable with 1777.
ENV DOCKER_TLS_CERTDIR=/certs
RUN mkdir -p /certs /certs/client && chmod 1777 /certs /certs/client
VOLUME /var/lib/docker
EXPOSE 2375 2376 9324

# docker:dind's dockerd-entrypoint.sh is replaced; `--` makes every CMD
# argument a dockerd flag.
ENTRYPOINT ["dind-supervisor", "run", "--"]
CMD []

# Healthy once dockerd answers (the agent's /readyz); dockerd's first start
# with fresh certificates takes a few seconds, hence the start period.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["dind-supervisor", "wait", "--timeout", "2"]

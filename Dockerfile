# dind-supervisor as a drop-in for docker:dind.
#
#   docker run -d --privileged --name dind -e DOCKER_TLS_CERTDIR=/certs \
#     -v dind-certs-ca:/certs/ca -v dind-certs-client:/certs/client \
#     dind-supervisor [DOCKERD FLAGS...]
#
# The words after the image name mean what they mean to docker:dind: flags
# go to dockerd, `dockerd ARGS` runs dockerd with exactly ARGS, any other
# program (`sh`) replaces the agent. The agent runs as PID 1 (reaps orphans,
# forwards signals), supervises dockerd, issues and rotates its TLS
# certificates and serves /metrics /healthz /readyz /status on :9324.
# See docs/dind-image.md.
#
# The base follows docker:dind's current major, pinned by version tag (both
# stages; add `@sha256:...` to pin the digest too). Upgrade policy: within a
# major at once, a new major after the e2e suite passed against it
# (docs/dind-image.md, "Upgrading the base"). No registry is reachable on the
# machine the project is developed on, so this file is checked structurally
# (tests/unit/test_deploy.py) and an equivalent image built from a Debian
# rootfs is exercised in tests/e2e.
ARG DIND_BASE=docker:29.4.3-dind

FROM ${DIND_BASE} AS build
RUN apk add --no-cache python3
COPY pyproject.toml README.md /src/
COPY supervisor /src/supervisor
# A venv keeps our dependencies away from the image's system Python (PEP 668).
RUN python3 -m venv /opt/dind-supervisor \
 && /opt/dind-supervisor/bin/pip install --no-cache-dir --disable-pip-version-check /src \
 && /opt/dind-supervisor/bin/dind-supervisor version

FROM ${DIND_BASE}
RUN apk add --no-cache python3
COPY --from=build /opt/dind-supervisor /opt/dind-supervisor
RUN ln -s /opt/dind-supervisor/bin/dind-supervisor /usr/local/bin/dind-supervisor

# What docker:dind sets (re-stated so the contract does not depend on the base):
# TLS on, certificates under /certs, the client half shareable with 1777.
ENV DOCKER_TLS_CERTDIR=/certs
RUN mkdir -p /certs /certs/client && chmod 1777 /certs /certs/client
VOLUME /var/lib/docker
# Only dockerd's ports: CI runners (GitLab) count a service as up once any
# exposed port accepts, and the metrics port opens before the client
# certificates exist. Publish 9324 yourself to scrape it.
EXPOSE 2375 2376

# docker:dind's dockerd-entrypoint.sh is replaced; after `--` the agent reads
# the CMD words as docker:dind does.
ENTRYPOINT ["dind-supervisor", "run", "--"]
CMD []

# Healthy once dockerd answers (the agent's /readyz); dockerd's first start
# with fresh certificates takes a few seconds, hence the start period.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["dind-supervisor", "wait", "--timeout", "2"]

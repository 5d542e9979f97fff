# syntax=docker/dockerfile:1
#
# vfax: a virtual fax device (SIP, T.38 and G.711 passthrough through spandsp).
#
#   docker build -t vfax:lab .
#   docker run --rm -v ./vfax.toml:/etc/vfax/vfax.toml:ro vfax:lab          # vfax serve
#   docker run --rm vfax:lab --help                                          # any vfax command
#
# Debian 12 (bookworm) slim; spandsp comes from Debian (libspandsp2, libspandsp2t64 from Debian 13 on;
# whichever apt offers), loaded at run time through cffi. The package is installed with pip into a
# virtualenv in a build stage, which also compiles the native G.711 path (t38/native/libvfaxrtp.so,
# libc only; .dockerignore keeps a checkout's own build out); only the virtualenv is copied into the
# runtime image, which has no compiler. The service runs as the unprivileged user vfax.
# HEALTHCHECK: `vfax health` exits 0 only when the API answers and every device configured to register
# is registered (see vfax/cli/health.py).

ARG DEBIAN_IMAGE=debian:bookworm-slim

FROM ${DEBIAN_IMAGE} AS build
ARG DEBIAN_FRONTEND=noninteractive
# gcc and libc6-dev compile the native G.711 path; spandsp because building it imports t38.spandsp
RUN set -e; apt-get update; \
    spandsp=libspandsp2; \
    if apt-cache show libspandsp2t64 >/dev/null 2>&1; then spandsp=libspandsp2t64; fi; \
    apt-get install -y --no-install-recommends python3 python3-venv gcc libc6-dev "$spandsp"; \
    rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/vfax
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sip ./sip
COPY t38 ./t38
COPY vfax ./vfax
# -I: not from /src/t38 (the current directory) but from the virtualenv, where the library must land
RUN /opt/vfax/bin/pip install --no-cache-dir --disable-pip-version-check . \
    && /opt/vfax/bin/python -I -m t38.native_rtp \
    && /opt/vfax/bin/pip uninstall -y --disable-pip-version-check pip

FROM ${DEBIAN_IMAGE}
ARG DEBIAN_FRONTEND=noninteractive
LABEL org.opencontainers.image.title="vfax" \
      org.opencontainers.image.description="A virtual fax device for SIP networks: T.38 and G.711 passthrough" \
      org.opencontainers.image.licenses="MIT"
RUN set -e; apt-get update; \
    spandsp=libspandsp2; \
    if apt-cache show libspandsp2t64 >/dev/null 2>&1; then spandsp=libspandsp2t64; fi; \
    apt-get install -y --no-install-recommends python3 "$spandsp"; \
    rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 vfax \
    && useradd --system --uid 10001 --gid vfax --home-dir /var/lib/vfax --shell /usr/sbin/nologin vfax \
    && install -d -o vfax -g vfax -m 0750 /var/lib/vfax /var/lib/vfax/inbox /var/lib/vfax/spool \
    && install -d -m 0755 /etc/vfax /usr/share/vfax
COPY --from=build /opt/vfax /opt/vfax
COPY vfax/samples/sample.pdf /usr/share/vfax/sample.pdf
ENV PATH=/opt/vfax/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VFAX_API=http://127.0.0.1:8025
# spandsp and the native G.711 path must load and the CLI must start, or the image is not what it
# claims to be: fail the build now.
RUN python3 -c "import t38.spandsp" \
    && python3 -c "import sys, t38.native_rtp as n; sys.exit(not n.available())" \
    && vfax --help >/dev/null
USER vfax
WORKDIR /var/lib/vfax
EXPOSE 5060/udp 8025/tcp
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
    CMD ["vfax", "health", "--timeout", "5"]
ENTRYPOINT ["vfax"]
CMD ["serve", "--config", "/etc/vfax/vfax.toml"]

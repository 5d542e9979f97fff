# syntax=docker/dockerfile:1
#
# vfax: a virtual fax device (SIP, T.38 and G.711 passthrough through spandsp).
#
#   docker build -t vfax:lab .
#   docker run --rm -v ./vfax.toml:/etc/vfax/vfax.toml:ro vfax:lab          # vfax serve
#   docker run --rm vfax:lab --help                                          # any vfax command
#
# Debian 12 (bookworm) slim; spandsp comes from Debian (libspandsp2, loaded at run time through cffi,
# nothing is compiled); the package is installed with pip into a virtualenv in a build stage and only
# the virtualenv is copied into the runtime image. The service runs as the unprivileged user vfax.
# HEALTHCHECK: `vfax health` exits 0 only when the API answers and every device configured to register
# is registered (see vfax/cli_health.py).

ARG DEBIAN_IMAGE=debian:bookworm-slim

FROM ${DEBIAN_IMAGE} AS build
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/vfax
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sip ./sip
COPY t38 ./t38
COPY vfax ./vfax
RUN /opt/vfax/bin/pip install --no-cache-dir --disable-pip-version-check . \
    && /opt/vfax/bin/pip uninstall -y --disable-pip-version-check pip

FROM ${DEBIAN_IMAGE}
ARG DEBIAN_FRONTEND=noninteractive
LABEL org.opencontainers.image.title="vfax" \
      org.opencontainers.image.description="A virtual fax device for SIP networks: T.38 and G.711 passthrough" \
      org.opencontainers.image.licenses="MIT"
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 libspandsp2 \
    && rm -rf /var/lib/apt/lists/*
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
# spandsp must load and the CLI must start, or the image is useless: fail the build now.
RUN python3 -c "import t38.spandsp" && vfax --help >/dev/null
USER vfax
WORKDIR /var/lib/vfax
EXPOSE 5060/udp 8025/tcp
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
    CMD ["vfax", "health", "--timeout", "5"]
ENTRYPOINT ["vfax"]
CMD ["serve", "--config", "/etc/vfax/vfax.toml"]

# syntax=docker/dockerfile:1
#
# Kamailio for the cluster lab (compose.yaml, profile `cluster`; docs/cluster.md): Debian 12's own
# kamailio package, the same 5.6 that tests/test_cluster_dispatch.py runs lab/cluster/kamailio.cfg with
# on Debian 12, on the same base as the vfax image. The configuration is not in the image: compose.yaml
# mounts the directory lab/cluster/ at /etc/kamailio/cluster (the directory, so that an edited
# dispatcher.list is seen by `kamcmd dispatcher.reload` even when the editor replaced the file).
#
# Runs as the package's unprivileged user kamailio, in the foreground, logging to stderr
# (`docker compose logs kamailio`). The control socket (kamcmd) is /run/kamailio/kamailio_ctl, the
# default of both the config and kamcmd.

ARG DEBIAN_IMAGE=debian:bookworm-slim

FROM ${DEBIAN_IMAGE}
ARG DEBIAN_FRONTEND=noninteractive
RUN set -e; apt-get update; \
    apt-get install -y --no-install-recommends kamailio; \
    rm -rf /var/lib/apt/lists/*; \
    install -d -o kamailio -g kamailio -m 0755 /run/kamailio
# Every module lab/cluster/kamailio.cfg loads is in the kamailio package; fail the build, not the start,
# if a future package moves one out (tests/test_lab.py keeps this list equal to the config's).
RUN set -e; for m in kex corex tm tmx sl rr pv maxfwd textops siputils xlog sanity ctl dispatcher; do \
      dpkg -L kamailio | grep -q "/kamailio/modules/$m\.so$" || { echo "kamailio lacks $m.so" >&2; exit 1; }; \
    done; kamailio -v
USER kamailio
EXPOSE 5060/udp
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 CMD ["kamcmd", "core.uptime"]
ENTRYPOINT ["kamailio", "-DD", "-E"]
CMD ["-f", "/etc/kamailio/cluster/kamailio.cfg"]

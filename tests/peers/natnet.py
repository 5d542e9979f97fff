"""A LAN behind a masquerading router, for NAT tests: the test process sits on the "internet" side.

Why: vfax behind a NAT must learn the address the NAT gives it (RFC 3581) and its peers must send media
to where it really comes from; only a real NAT shows whether they do. Layout, all made by the test:

    test process (bridge, 10.213.X.1) --- rtr eth0 (10.213.X.2) [nftables masquerade] rtr eth1 (10.214.X.1)
                                                                                        |
                                                                      lan eth0 (10.214.X.2, default via rtr)

The test process (Kamailio, vfax on the public side) has no route to 10.214.X.0/24: everything from the
LAN reaches it with the router's address and a port the router chose (``fully-random``: never the
LAN's own port, so nothing works by accident), and only answers to what the LAN sent get back in.
:meth:`NatNetwork.flush` forgets every mapping (``conntrack -F``), as a router that reboots or times a
binding out: the LAN's next packet gets a new public port.

Needs root, iproute2, nftables and conntrack (Debian packages ``nftables``, ``conntrack``); tests skip
with the reason where they are missing.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess

from tests.peers.netns import Host, NetnsUnavailable, TestNetwork, _ip

__all__ = ["NatNetwork", "nat_unavailable"]


def nat_unavailable() -> str | None:
    """Why a NAT cannot be made here (None: it can)."""
    import os

    if os.geteuid() != 0:
        return "not root (network namespaces need CAP_NET_ADMIN)"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables"), ("conntrack", "conntrack")):
        if shutil.which(tool) is None and not os.access(f"/usr/sbin/{tool}", os.X_OK):
            return f"{tool} is not installed (Debian package {package})"
    return None


def _exec(netns: str, *argv: str) -> str:
    done = subprocess.run(
        ["ip", "netns", "exec", netns, *argv], capture_output=True, text=True, timeout=30, check=False
    )
    if done.returncode != 0:
        raise NetnsUnavailable(f"{' '.join(argv)} in {netns}: {done.stderr.strip() or done.returncode}")
    return done.stdout


class NatNetwork:
    """The router ``rtr`` (public address :attr:`public`) and the host ``lan`` behind it (:attr:`lan`)."""

    __test__ = False

    def __init__(self, *, forward_all: bool = False) -> None:
        """``forward_all``: a "DMZ host" router instead: everything arriving at the public address is
        forwarded to the LAN host, and the LAN's ports are kept when they are free (plain masquerade),
        as for a host whose ports the router forwards (vfax's ``advertise``)."""
        self.forward_all = forward_all
        why = nat_unavailable()
        if why:
            raise NetnsUnavailable(why)
        self.net = TestNetwork(["rtr"])
        if self.net.mode != "netns":
            self.net.close()
            raise NetnsUnavailable(self.net.reason or "no namespaces")
        try:
            self._build()
        except Exception:
            self.close()
            raise

    def _build(self) -> None:
        router = self.net["rtr"]
        assert router.netns is not None and self.net.subnet is not None
        x = self.net.subnet.network_address.packed[2]
        lan_net = ipaddress.IPv4Network(f"10.214.{x}.0/24")
        self.lan_subnet = lan_net
        inside_router, inside = (str(a) for a in list(lan_net.hosts())[:2])
        tag = self.net._tag
        # Packets the public side sends to the LAN's private addresses (a peer that believes a private SDP)
        # must die here, as on the internet, never follow this machine's default route out.
        _ip("route", "add", "unreachable", str(lan_net))
        self._route: str | None = str(lan_net)
        lan_ns = f"{tag}lan"
        _ip("netns", "add", lan_ns)
        self.net._made_netns.append(lan_ns)
        a, b = f"{tag}na", f"{tag}nb"
        _ip("link", "add", a, "type", "veth", "peer", "name", b)
        _ip("link", "set", a, "netns", router.netns, "name", "eth1")
        _ip("link", "set", b, "netns", lan_ns, "name", "eth0")
        _ip("-n", router.netns, "addr", "add", f"{inside_router}/24", "dev", "eth1")
        _ip("-n", router.netns, "link", "set", "eth1", "up")
        _ip("-n", lan_ns, "addr", "add", f"{inside}/24", "dev", "eth0")
        _ip("-n", lan_ns, "link", "set", "eth0", "up")
        _ip("-n", lan_ns, "link", "set", "lo", "up")
        _ip("-n", lan_ns, "route", "add", "default", "via", inside_router)
        _exec(router.netns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        if self.forward_all:
            rules = (
                "table ip vfaxnat {\n"
                " chain pre { type nat hook prerouting priority dstnat; policy accept;\n"
                f'  iifname "eth0" dnat to {inside}\n'
                " }\n"
                " chain post { type nat hook postrouting priority srcnat; policy accept;\n"
                '  oifname "eth0" masquerade\n'
                " }\n"
                "}\n"
            )
        else:
            rules = (
                "table ip vfaxnat {\n"
                " chain post { type nat hook postrouting priority srcnat; policy accept;\n"
                '  oifname "eth0" masquerade fully-random\n'
                " }\n"
                "}\n"
            )
        done = subprocess.run(
            ["ip", "netns", "exec", router.netns, "nft", "-f", "-"],
            input=rules, capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise NetnsUnavailable(f"nft masquerade rule refused: {done.stderr.strip()}")
        self.lan = Host("lan", inside, lan_ns)
        self.router = router

    @property
    def public(self) -> str:
        """The router's address on the internet side: what the LAN's packets come from."""
        return self.router.address

    @property
    def gateway(self) -> str:
        """The test process's address on the internet side (Kamailio and public vfax listen here)."""
        return self.net.gateway

    def flush(self) -> None:
        """Forget every NAT mapping (the LAN's next packet out gets a new public port)."""
        assert self.router.netns is not None
        subprocess.run(
            ["ip", "netns", "exec", self.router.netns, "conntrack", "-F"],
            capture_output=True, timeout=30, check=False,
        )  # fmt: skip

    def mappings(self) -> str:
        """The router's conntrack table (for failure reports)."""
        assert self.router.netns is not None
        done = subprocess.run(
            ["ip", "netns", "exec", self.router.netns, "conntrack", "-L"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        return done.stdout + done.stderr

    def describe(self) -> str:
        return (
            f"{self.net.describe()}\nrouter public {self.public}, lan {self.lan.address} ({self.lan_subnet})"
            f"\nconntrack:\n{self.mappings()}"
        )

    def close(self) -> None:
        if getattr(self, "_route", None):
            _ip("route", "del", "unreachable", str(self._route), check=False)
            self._route = None
        self.net.close()

    def __enter__(self) -> NatNetwork:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

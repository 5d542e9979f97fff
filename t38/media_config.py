"""From a negotiated T.38 session (SDP, Annex D) to the settings of our UDPTL codec and spandsp.

One place decides how the SDP outcome drives the wire: the peer's T38FaxMaxDatagram bounds every
datagram we send, the IFP size given to spandsp leaves room for the redundancy the call wants, and
spandsp's own packet repetition is switched off when UDPTL error recovery already covers losses
(each repeat would cost a sequence number and push useful history out of the datagram).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from t38.engine import T38Options
from t38.sdp import NegotiatedT38, RateManagement, UdpEC
from t38.udptl import DEFAULT_CONTROL_REDUNDANCY, Udptl, UdptlConfig

EcChoice = Literal["none", "redundancy", "fec"]

_EC_MODE: dict[UdpEC, EcChoice] = {UdpEC.NONE: "none", UdpEC.REDUNDANCY: "redundancy", UdpEC.FEC: "fec"}

# Leave room in each datagram for at least this many image IFPs of history (redundancy mode).
_MIN_IFP_SHARE = 4


@dataclass(frozen=True)
class T38Media:
    udptl: UdptlConfig
    engine: T38Options


def t38_media(
    negotiated: NegotiatedT38,
    *,
    ec: EcChoice | None = None,
    depth: int | None = None,
    control_depth: int | None = None,
    local_max_datagram: int = 1400,
) -> T38Media:
    """UDPTL and engine settings for a call. ``ec``/``depth``/``control_depth`` override the negotiated
    scheme only for simulations and tests; on a real call the SDP answer decides (T.38 Annex D).
    ``depth`` is the redundancy depth of image data (or the FEC entries); T.30 control messages get
    ``control_depth``, by default at least DEFAULT_CONTROL_REDUNDANCY: they are few and losing one
    costs seconds of T.30 timeouts."""
    mode: EcChoice = ec or _EC_MODE[negotiated.udp_ec]
    cfg = UdptlConfig(
        ec_mode=mode,
        peer_max_datagram=negotiated.send_max_datagram,
        local_max_datagram=local_max_datagram,
        t38_version=negotiated.version,
    )
    if depth is not None:
        if depth < 0:
            raise ValueError("the error-correction depth must not be negative")
        if mode == "fec":
            cfg = replace(cfg, fec_entries=max(1, depth))
        else:
            cfg = replace(
                cfg, image_redundancy=depth, control_redundancy=max(depth, DEFAULT_CONTROL_REDUNDANCY)
            )
    max_ifp = Udptl(cfg).sender.max_ifp_size()
    if mode != "none":
        max_ifp = max(64, max_ifp // _MIN_IFP_SHARE)
    if negotiated.send_max_ifp:
        max_ifp = min(max_ifp, negotiated.send_max_ifp)
    engine = T38Options(
        version=negotiated.version,
        max_bit_rate=negotiated.max_bit_rate,
        transferred_tcf=negotiated.rate_management is RateManagement.TRANSFERRED_TCF,
        max_datagram=max_ifp,
        packet_repeats=1 if mode != "none" else 0,
    )
    return T38Media(cfg, engine)

"""`vfax simulate`: a document through two spandsp engines back to back, in virtual time.

The sender's TIFF-F is prepared from the user's document exactly as a real send would be; the
receiver writes what it really decoded, and the verdict is the receiver's T.30 phase E result,
never the sender's hope. Output: the received TIFF (as spandsp wrote it), a PDF made from it, and a
JSON report, all placed atomically in the output folder.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from t38 import sdp as t38sdp
from t38.engine import FaxConfig, FaxEvent, FaxSession, Media
from t38.impairment import Impairment
from t38.media_config import EcChoice, T38Media, t38_media
from t38.udptl import UdptlConfig
from t38.virtual_line import BackToBackResult, VirtualLink, run_back_to_back, udptl_wires
from vfax import documents, storage
from vfax.documents import PaperSize, Resolution

log = logging.getLogger("vfax.simulate")


@dataclass(frozen=True)
class NetworkModel:
    """The seeded impairments applied to each direction of the virtual line (see t38.impairment)."""

    loss: float = 0.0  # probability a packet (20 ms audio frame or UDPTL datagram) is lost
    burst_loss: float = 0.0  # long-run share of packets lost in bursts (Gilbert-Elliott)
    burst_len: float = 0.0  # mean burst length in packets
    jitter_ms: float = 0.0
    reorder: float = 0.0
    duplicate: float = 0.0
    seed: int = 1

    @property
    def impaired(self) -> bool:
        return any((self.loss, self.burst_loss, self.jitter_ms, self.reorder, self.duplicate))

    def impairment(self, direction: int) -> Impairment:
        """The model of one direction; raises ValueError naming a bad setting."""
        return Impairment(
            loss=self.loss,
            burst_loss=self.burst_loss,
            burst_len=self.burst_len,
            jitter_ms=self.jitter_ms,
            reorder=self.reorder,
            duplicate=self.duplicate,
            seed=self.seed * 2 + direction,
        )

    def validate(self) -> None:
        self.impairment(0)

    def link(self, direction: int) -> VirtualLink:
        return VirtualLink(self.impairment(direction)) if self.impaired else VirtualLink()


@dataclass
class SimulationRequest:
    document: Path
    out_dir: Path
    media: Media = Media.T38
    ecm: bool = True
    resolution: Resolution = Resolution.FINE
    paper: PaperSize = PaperSize.A4
    network: NetworkModel = field(default_factory=NetworkModel)
    max_bit_rate: int = 14400
    ulaw: bool = True
    ec: EcChoice | None = None  # None: what T.38 SDP negotiation between two vfax ends gives
    ec_depth: int | None = None
    control_depth: int | None = None  # redundancy depth for T.30 control messages (default: deeper)
    max_pages: int = 100


def negotiated_t38(req: SimulationRequest) -> tuple[T38Media, T38Media]:
    """Both ends' T.38 settings, through the same SDP negotiation a real call runs (T.38 Annex D):
    the receiver offers T.38 in its re-INVITE, the sender answers."""
    offer = t38sdp.DEFAULT_LOCAL
    answer = t38sdp.negotiate_answer(offer, t38sdp.DEFAULT_LOCAL)
    receiver = t38sdp.accept_answer(offer, answer)
    sender = t38sdp.negotiated_as_answerer(offer, answer)
    return (
        t38_media(sender, ec=req.ec, depth=req.ec_depth, control_depth=req.control_depth),
        t38_media(receiver, ec=req.ec, depth=req.ec_depth, control_depth=req.control_depth),
    )


def session_report(s: FaxSession) -> dict[str, Any]:
    """What one end saw: its phase E result, its pages, and its T.30 timeline."""
    assert s.result is not None
    return {
        "role": "calling" if s.calling else "answering",
        "direction": "send" if s.send_file else "receive",
        "result": s.result.as_dict(),
        "negotiated": asdict(s.negotiated) if s.negotiated else None,
        "pages": [asdict(p) for p in s.pages],
        "t30": [asdict(m) for m in s.timeline],
        "ecm_frames": s.ecm_frames,
    }


@dataclass
class PairRun:
    """Two engines run back to back on a prepared TIFF: the raw outcome, before any file is placed."""

    outcome: BackToBackResult
    sender: FaxSession
    receiver: FaxSession
    cpu_seconds: float
    wall_seconds: float
    udptl: UdptlConfig | None


def make_sessions(
    req: SimulationRequest, send_tiff: Path, receive_tiff: Path
) -> tuple[FaxSession, FaxSession, T38Media, T38Media]:
    """A calling sender and an answering receiver, configured as two vfax ends would negotiate."""
    tx_t38, rx_t38 = negotiated_t38(req)

    def config(ident: str, media: T38Media) -> FaxConfig:
        return FaxConfig(ident=ident, ecm=req.ecm, max_bit_rate=req.max_bit_rate, t38=media.engine)

    sender = FaxSession(
        calling=True,
        send_file=send_tiff,
        config=config("VFAX SENDER", tx_t38),
        media=req.media,
        name="sender",
    )
    receiver = FaxSession(
        calling=False,
        receive_file=receive_tiff,
        config=config("VFAX RECEIVER", rx_t38),
        media=req.media,
        name="receiver",
    )
    return sender, receiver, tx_t38, rx_t38


Runner = Callable[[SimulationRequest, Path, Path, Callable[[FaxSession, FaxEvent], None] | None], PairRun]


def run_pair(
    req: SimulationRequest,
    send_tiff: Path,
    receive_tiff: Path,
    on_event: Callable[[FaxSession, FaxEvent], None] | None = None,
) -> PairRun:
    """Fax ``send_tiff`` to a receiver writing ``receive_tiff``, back to back in virtual time."""
    sender, receiver, tx_t38, rx_t38 = make_sessions(req, send_tiff, receive_tiff)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    try:
        outcome = run_back_to_back(
            sender,
            receiver,
            forward=req.network.link(0),
            backward=req.network.link(1),
            wires=udptl_wires(tx_t38.udptl, rx_t38.udptl) if req.media is Media.T38 else None,
            ulaw=req.ulaw,
            on_event=on_event,
        )
    finally:
        sender.close()
        receiver.close()
    return PairRun(
        outcome=outcome,
        sender=sender,
        receiver=receiver,
        cpu_seconds=time.process_time() - cpu0,
        wall_seconds=time.perf_counter() - wall0,
        udptl=tx_t38.udptl if req.media is Media.T38 else None,
    )


def simulate(
    req: SimulationRequest,
    on_event: Callable[[FaxSession, FaxEvent], None] | None = None,
    on_prepared: Callable[[int], None] | None = None,
    runner: Runner = run_pair,
) -> dict[str, Any]:
    """Fax one document from a sender to a receiver and return the report (also ``report.json``).

    ``runner`` moves the fax: ``run_pair`` in virtual time, or ``vfax.cli.loopback.run_pair_realtime``
    over real sockets. Raises ``documents.DocumentError`` for an unusable document; nothing is
    written then.
    """
    req.network.validate()
    with tempfile.TemporaryDirectory(prefix="vfax-sim-") as work:
        prepared = documents.prepare_fax_tiff(
            req.document,
            Path(work) / "send.tif",
            resolution=req.resolution,
            paper=req.paper,
            max_pages=req.max_pages,
        )
        if on_prepared is not None:
            on_prepared(prepared.pages)
        req.out_dir.mkdir(parents=True, exist_ok=True)
        # spandsp writes the received image straight to disk; it starts as a hidden part file beside
        # its final name so a crash mid-fax never leaves a file that looks complete.
        rx_tmp = req.out_dir / f".received-{time.time_ns()}.tif.part"
        try:
            run = runner(req, prepared.path, rx_tmp, on_event)
            rx = run.outcome.answering
            out_tiff: Path | None = None
            out_pdf: Path | None = None
            if rx.pages > 0 and rx_tmp.exists():
                out_tiff = storage.commit_file(rx_tmp, storage.unique_path(req.out_dir, "received", ".tif"))
                out_pdf = documents.tiff_to_pdf(out_tiff, out_tiff.with_suffix(".pdf"))
        finally:
            rx_tmp.unlink(missing_ok=True)

    ok = rx.ok and rx.pages == prepared.pages
    report: dict[str, Any] = {
        "ok": ok,
        "status": "completed" if ok else "failed",
        "reason": rx.text if not rx.ok else ("" if ok else "pages missing"),
        "pages": rx.pages,
        "pages_sent": prepared.pages,
        "bit_rate": rx.bit_rate or None,  # null: phase B never happened, nothing was negotiated
        "ecm": rx.ecm if rx.bit_rate else None,
        "media": req.media.value,
        "resolution": req.resolution.name.lower(),
        "line_seconds": round(run.outcome.line_seconds, 2),
        "cpu_seconds": round(run.cpu_seconds, 4),
        "wall_seconds": round(run.wall_seconds, 4),
        "speedup": round(run.outcome.line_seconds / run.cpu_seconds, 1) if run.cpu_seconds > 0 else None,
        "out_tiff": str(out_tiff) if out_tiff else None,
        "out_pdf": str(out_pdf) if out_pdf else None,
        "network": asdict(req.network),
        "udptl": asdict(run.udptl) if run.udptl else None,
        "links": run.outcome.link_stats,
        "sender": session_report(run.sender),
        "receiver": session_report(run.receiver),
    }
    storage.write_json(storage.unique_path(req.out_dir, "report", ".json"), report)
    return report

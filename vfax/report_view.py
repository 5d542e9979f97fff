"""The call report drawn: one HTML fragment (inline SVG, no script) that shows what happened on the wire.

``render_call_report(report)`` turns a call report (``FaxCall.report()``, the JSON beside each received
fax and behind ``send --report``) into the picture an operator reads when a fax failed: the SIP ladder as
a sequence diagram (the re-INVITE to T.38 and its answer marked, failover steps, PRACK), the T.30 phases
on a time line (DIS, DCS, training, pages, MCF/RTN, DCN), a row per page, the RTP/UDPTL counters with
what each one means, and the end reason in words. ``render_call_report_page`` wraps it into a
standalone page (``vfax report REPORT.json --html OUT.html``).

It is a plain function of plain JSON (no web framework, no I/O) so the console can mount it in a page
and tests can render any report. Every value that came from the network (reason phrases, URIs, caller
names, CSI/TSI, file names) is escaped; the drawings have ``<title>``/``<desc>`` and each has a table
beside it with the same facts for screen readers; the SVGs scale with their ``viewBox``.
"""

from __future__ import annotations

import hashlib
import html
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from vfax.status import SIP_STATUS_TABLE, t30_completion

__all__ = ["LadderStep", "end_reason_words", "ladder_steps", "render_call_report", "render_call_report_page"]

WIDTH = 640  # viewBox width of both drawings; they scale to the page (phone width included)
LEFT_X, RIGHT_X = 140, 600  # the two lifelines of the ladder
ROW = 30  # ladder: vertical space per message
LABEL_CHARS = 58  # ladder: longest label drawn; the full first line is in the arrow's <title> and the table

#: What each T.30 message says, for the timeline's table (T.30 §5.3.6; names as spandsp prints them).
T30_MEANINGS: dict[str, str] = {
    "DIS": "receiver's capabilities (speeds, ECM, resolutions)",
    "DTC": "request to poll: the receiver asks to be sent to",
    "DCS": "sender's choice of speed, ECM and resolution",
    "CSI": "receiver's fax number (called subscriber identification)",
    "TSI": "sender's fax number (transmitting subscriber identification)",
    "CIG": "polling station's identification",
    "NSF": "manufacturer-specific capabilities",
    "NSS": "manufacturer-specific settings",
    "NSC": "manufacturer-specific polling command",
    "SUB": "sub-address",
    "SID": "sender identification (password for the receiver)",
    "PWD": "password",
    "SEP": "selective polling address",
    "CFR": "training confirmed: pages may start",
    "FTT": "training failed: the sender will try again, usually slower",
    "MPS": "end of page, more pages follow",
    "EOP": "end of page, it was the last one",
    "EOM": "end of page, back to negotiation",
    "PPS": "end of a partial page or page (ECM)",
    "PPR": "some ECM frames were bad: send them again",
    "RR": "receiver ready? (ECM flow control)",
    "RNR": "receiver not ready (ECM flow control)",
    "CTC": "continue to correct, maybe at a lower speed (ECM)",
    "CTR": "answer to CTC",
    "EOR": "end of retransmission: give up on the bad frames (ECM)",
    "ERR": "answer to EOR",
    "MCF": "page received well (message confirmation)",
    "RTP": "page received, but retrain before the next one",
    "RTN": "page received badly: retrain and send it again",
    "PIP": "procedure interrupt positive (operator wanted)",
    "PIN": "procedure interrupt negative",
    "CRP": "please repeat the last command",
    "FNV": "a field was not valid",
    "DCN": "disconnect: the fax session ends",
}

#: The end reasons FaxCall writes, by how they start, in words a fax operator understands.
END_REASONS: tuple[tuple[str, str], ...] = (
    ("remote hangup", "The other side hung up before the fax was finished."),
    ("call ended", "The call ended before the fax was finished."),
    (
        "no UDPTL from the peer",
        "The other side stopped sending T.38 fax data; the call was ended after a wait.",
    ),
    ("no RTP", "The other side stopped sending audio; the call was ended after a wait."),
    ("maximum call duration", "The call took longer than the longest call allowed and was ended."),
    ("t38=only", "This end insists on T.38 and the other side did not switch to it."),
    ("no acceptable media", "The caller offered no media this end can use (answered 488)."),
    ("no usable media", "The answer offered no media this end can use."),
    ("unusable SDP", "The other side's media description could not be understood."),
    ("aborted", "The fax was cancelled on this end."),
    ("test hangup", "The fax was cancelled on this end."),
)

#: SIP final statuses an operator meets most, in words (others: vfax.status.SIP_STATUS_TABLE's reasons).
SIP_SENTENCES: dict[int, str] = {
    401: "This end's SIP credentials were refused: check the device's user and password.",
    403: "The network or the other side refuses calls from this line to this number.",
    404: "The number does not exist: check the destination.",
    407: "The proxy refused this end's credentials: check the device's user and password.",
    408: "Nobody answered in time.",
    480: "The other side is not available now (not registered, or not answering).",
    484: "The number is incomplete: check the destination.",
    486: "The line was busy.",
    487: "The call was cancelled by this end before it was answered.",
    488: "The other side cannot take the media offered (neither T.38 nor G.711 as offered).",
    491: "Both ends changed the call at the same moment; one of them tries again.",
    500: "The other side's server failed; a later try may work.",
    502: "The network behind the proxy failed; a later try may work.",
    503: "The other side or the trunk is overloaded or down for now; a later try may work.",
    504: "The next network hop did not respond; a later try may work.",
    600: "The number is busy everywhere.",
    603: "The other side declined the call.",
    604: "The number does not exist anywhere.",
    606: "The other side cannot take this kind of call.",
}

#: Counters of the UDPTL (T.38) stream and what each says; the order is the table's.
UDPTL_COUNTERS: tuple[tuple[str, str], ...] = (
    ("sent", "datagrams sent to the other side"),
    ("resent", "idle control datagrams sent again on purpose (a safety margin, not a fault)"),
    ("largest_datagram", "bytes in the largest datagram sent (kept within the other side's maximum)"),
    ("received", "well-formed datagrams received"),
    ("largest_received", "bytes in the largest datagram received"),
    (
        "duplicates",
        "datagrams that arrived twice (the other side's repeats or the network); dropped, harmless",
    ),
    ("reordered", "datagrams that overtook each other on the way; put back in order"),
    ("late", "datagrams that came after their data had been recovered or given up; dropped"),
    (
        "recovered_redundancy",
        "lost datagrams rebuilt from the copies carried by later ones: loss that did no harm",
    ),
    ("recovered_fec", "lost datagrams rebuilt by forward error correction: loss that did no harm"),
    ("unrecoverable", "lost datagrams that nothing could rebuild: the fax engine saw a gap"),
    ("malformed", "datagrams that were not valid UDPTL; dropped"),
    ("resyncs", "times the other side's numbering jumped so far that counting started afresh"),
    ("foreign", "datagrams from an address other than the other side's; dropped"),
    ("oversize", "fax packets too large for the other side's maximum datagram; not sent"),
    ("send_errors", "datagrams the network refused to carry (e.g. port unreachable)"),
    ("session_errors", "packets the fax engine could not take (logged, the call went on)"),
)
#: Counters of the RTP (G.711) stream; ``received.*`` and ``sent.*`` are the nested dictionaries.
RTP_COUNTERS: tuple[tuple[str, str], ...] = (
    ("sent.packets_sent", "audio packets sent (one per 20 ms)"),
    ("received.packets_received", "audio packets received"),
    ("received.lost", "packets that never arrived: a fax modem hears a gap, often fatal on G.711"),
    ("received.late", "packets that came too late to be played; dropped (the modem heard a gap)"),
    ("received.duplicates", "packets that arrived twice; dropped, harmless"),
    ("received.reordered", "packets that overtook each other; put back in order in time"),
    ("received.jitter_ms", "how unevenly packets arrived, in milliseconds (RFC 3550 jitter)"),
    (
        "received.max_late_ms",
        "how late the latest late packet was: the extra buffering that would have saved it",
    ),
    ("received.max_depth_ms", "deepest the playout buffer got, in milliseconds"),
    ("received.frames_missing", "20 ms frames with no audio at all once the stream had started"),
    ("received.ssrc_changes", "times the other side's stream identity changed (a new source)"),
    ("received.resyncs", "times the stream had to be re-anchored (a jump in time or numbering)"),
    ("received.ignored_pt", "packets of another payload type (e.g. DTMF events); ignored"),
    ("strangers", "packets from elsewhere before the other side was known; dropped"),
    ("malformed", "datagrams that were not RTP; dropped"),
    ("send_errors", "packets the network refused to carry"),
)
#: Counters that mean trouble when not zero (drawn highlighted).
BAD_COUNTERS = frozenset(
    {"unrecoverable", "malformed", "send_errors", "session_errors", "oversize", "received.lost",
     "received.late", "received.frames_missing", "late"}
)  # fmt: skip


def esc(value: Any) -> str:
    """Text for HTML and inline SVG: every value of a report is escaped, whatever its origin."""
    return html.escape("" if value is None else str(value), quote=True)


def _seconds(value: Any) -> str:
    return f"{float(value):.3f} s" if isinstance(value, int | float) else "?"


def _party_names(report: dict[str, Any]) -> tuple[str, str]:
    """(this end, the other end) as the report names them."""
    result = report.get("result") or {}
    mine = "this end (vfax)"
    if report.get("local_ident"):
        mine += f" {report['local_ident']}"
    caller = report.get("caller") or {}
    other = report.get("remote") or "the other end"
    if caller.get("name"):
        other = f'"{caller["name"]}" {other}'
    if result.get("remote_ident"):
        other += f" ({result['remote_ident']})"
    return mine, other


# --- the SIP ladder ---------------------------------------------------------------------------------------
@dataclass
class LadderStep:
    """One entry of ``report["sip"]["ladder"]`` with what it is in the call (derived from the order)."""

    index: int
    t: float
    dir: str  # "out" (this end sent it), "in" (received), "failover" (a move to the next target)
    line: str
    attempt: int = 1
    method: str = ""  # request method, "" for a response
    status: int | None = None  # response status
    note: str = ""  # what this message means here, in words
    tags: set[str] = field(default_factory=set)  # "t38", "reinvite", "prack", "failed", "resent"


_STATUS_LINE = re.compile(r"^SIP/2\.0\s+(\d{3})")
_T38_EVENTS_OUT = ("re-INVITE to T.38 sent",)
_T38_EVENTS_IN = ("media t38", "T.38 re-INVITE answered with audio only")


def ladder_steps(report: dict[str, Any]) -> list[LadderStep]:
    """The ladder with each message's role: the first INVITE of each attempt, re-INVITEs (to T.38 when
    the media events say so, matched by time), their answers, PRACKs, failures and retransmissions.
    Responses are paired with the latest unanswered request from the other side (PRACK and glare
    answer in that order)."""
    sip = report.get("sip") or {}
    events = (report.get("media") or {}).get("events") or []
    steps: list[LadderStep] = []
    for i, raw in enumerate(sip.get("ladder") or []):
        step = LadderStep(
            index=i,
            t=float(raw.get("t", 0.0)),
            dir=str(raw.get("dir", "")),
            line=str(raw.get("line", "")),
            attempt=int(raw.get("attempt", 1)),
        )
        m = _STATUS_LINE.match(step.line)
        if m:
            step.status = int(m.group(1))
        elif step.dir in ("in", "out"):
            step.method = step.line.split(" ", 1)[0].upper()
        steps.append(step)

    direct = report.get("policy") == "direct" and report.get("direction") == "send"
    first_media = next((e.get("event") for e in events if str(e.get("event", "")).startswith("media ")), None)
    established: set[int] = set()  # attempts whose first INVITE got a 2xx
    seen_invite: set[int] = set()
    open_requests: dict[str, list[LadderStep]] = {"in": [], "out": []}
    previous: LadderStep | None = None
    for step in steps:
        before, previous = previous, step
        if step.dir == "failover":
            step.note = "no answer or 503 here: the same request goes to the next address (RFC 3263)"
            continue
        if step.method:
            pending = open_requests[step.dir]
            if step.method != "ACK" and any(p.line == step.line and p.method == step.method for p in pending):
                after_failover = before is not None and before.dir == "failover"
                step.tags.add("resent")
                step.note = "the same request, to the next address" if after_failover else "sent again"
                continue
            if step.method == "INVITE":
                if step.attempt not in seen_invite:
                    seen_invite.add(step.attempt)
                    step.note = "the call"
                    if (direct and step.attempt == 1) or (
                        report.get("direction") == "receive" and first_media == "media t38"
                    ):
                        step.tags.add("t38")
                        step.note = "the call, offering T.38 at once"
                elif step.attempt in established:
                    step.tags.add("reinvite")
                    step.note = "re-INVITE: change of media"
                    if _is_t38_reinvite(step, events):
                        step.tags.add("t38")
                        step.note = "re-INVITE to T.38"
                    elif _near(events, "media removed by the peer", step.t):
                        step.note = "re-INVITE removing the fax stream (end of fax)"
            elif step.method == "PRACK":
                step.tags.add("prack")
                step.note = "acknowledges a reliable provisional response (RFC 3262)"
            elif step.method == "BYE":
                step.note = "hang-up"
            elif step.method == "CANCEL":
                step.note = "gives up ringing"
            elif step.method == "ACK":
                step.note = "confirms the final answer"
                continue  # an ACK gets no response
            pending.append(step)
            continue
        if step.status is None:
            continue
        other = "in" if step.dir == "out" else "out"
        if step.status < 200:
            step.note = {100: "the request arrived", 180: "ringing", 183: "progress"}.get(step.status, "")
            continue
        pending = open_requests[other]
        request = pending.pop() if pending else None
        if request is not None:
            step.note = f"answers {request.method}"
            if request.method == "INVITE" and "t38" in request.tags:
                step.tags.add("t38")
                step.note = "accepts T.38" if step.status < 300 else "refuses T.38"
            if request.method == "INVITE" and request.note.startswith("the call") and step.status < 300:
                established.add(request.attempt)
        if step.status >= 300:
            step.tags.add("failed")
            words = sip_status_words(step.status)
            if step.status != 491 and words:
                step.note = (step.note + ": " if step.note else "") + words
            elif step.status == 491:
                step.note = "both ends asked at once (glare): one tries again shortly"
    return steps


def _is_t38_reinvite(step: LadderStep, events: list[dict[str, Any]]) -> bool:
    """A re-INVITE is the T.38 one when the media events around it say so: we noted "re-INVITE to T.38
    sent" just before sending ours (a glare retry comes up to 4 s later, RFC 3261 §14.1); theirs
    switched us to T.38 (or was refused as such) right after it arrived."""
    for e in events:
        at, name = e.get("at"), e.get("event")
        if not isinstance(at, int | float):
            continue
        if step.dir == "out" and name in _T38_EVENTS_OUT and step.t - 4.5 <= at <= step.t + 0.05:
            return True
        t38_event = name in _T38_EVENTS_IN or (name == "re-INVITE refused" and e.get("t38"))
        if step.dir == "in" and t38_event and step.t - 0.05 <= at <= step.t + 1.0:
            return True
    return False


def _near(events: list[dict[str, Any]], name: str, t: float) -> bool:
    return any(e.get("event") == name and abs(float(e.get("at", -9)) - t) < 1.0 for e in events)


def sip_status_words(status: int) -> str:
    """A SIP final status in words (vfax.status.SIP_STATUS_TABLE's reasons)."""
    for rule in SIP_STATUS_TABLE:
        if rule.first <= status <= rule.last:
            return rule.reason
    return ""


def _ladder_svg(report: dict[str, Any], steps: list[LadderStep], uid: str) -> str:
    mine, other = _party_names(report)
    top = 64
    rows: list[str] = []
    y = top
    last_attempt = steps[0].attempt if steps else 1
    for step in steps:
        if step.attempt != last_attempt:
            last_attempt = step.attempt
            y += 10
            rows.append(
                f'<line class="sep" x1="8" y1="{y - 14}" x2="{WIDTH - 8}" y2="{y - 14}"/>'
                f'<text class="sep" x="8" y="{y - 18}">'
                f"attempt {step.attempt}: a new INVITE (new Call-ID)</text>"
            )
        label = step.line if len(step.line) <= LABEL_CHARS else step.line[: LABEL_CHARS - 1] + "…"
        time_text = f"{step.t:.3f} s"
        cls = " ".join(sorted({step.dir, *step.tags}))
        title = f"{time_text} {step.dir}: {step.line}" + (f" ({step.note})" if step.note else "")
        if step.dir == "failover":
            rows.append(
                f'<g class="step failover" data-step="{step.index}"><title>{esc(title)}</title>'
                f'<rect x="{LEFT_X - 6}" y="{y - 16}" width="{RIGHT_X - LEFT_X + 12}" height="22" rx="4"/>'
                f'<text class="time" x="8" y="{y}">{esc(time_text)}</text>'
                f'<text class="label" x="{(LEFT_X + RIGHT_X) // 2}" y="{y - 1}">'
                f"failover: {esc(label)}</text></g>"
            )
            y += ROW
            continue
        x1, x2 = (LEFT_X, RIGHT_X) if step.dir == "out" else (RIGHT_X, LEFT_X)
        head = -8 if x2 > x1 else 8
        tag = ""
        if "t38" in step.tags:
            tag = " ◆ T.38"
        rows.append(
            f'<g class="step arrow {esc(cls)}" data-step="{step.index}"><title>{esc(title)}</title>'
            f'<text class="time" x="8" y="{y + 4}">{esc(time_text)}</text>'
            f'<line x1="{x1}" y1="{y}" x2="{x2 + head}" y2="{y}"/>'
            f'<polygon points="{x2},{y} {x2 + head},{y - 4} {x2 + head},{y + 4}"/>'
            f'<text class="label" x="{(LEFT_X + RIGHT_X) // 2}" y="{y - 5}">{esc(label)}{tag}</text></g>'
        )
        y += ROW
    height = y + 10
    desc = (
        f"{len([s for s in steps if s.dir != 'failover'])} SIP messages between {mine} (left) and {other} "
        f"(right), top to bottom in time order; arrows marked T.38 are the switch to fax over T.38."
    )
    return (
        f'<svg class="ladder" viewBox="0 0 {WIDTH} {height}" width="100%" role="img" '
        f'aria-labelledby="{uid}-lt {uid}-ld" preserveAspectRatio="xMidYMin meet">'
        f'<title id="{uid}-lt">SIP ladder of the call</title><desc id="{uid}-ld">{esc(desc)}</desc>'
        f'<text class="party" x="{LEFT_X}" y="18">{esc(_clip(mine, 30))}</text>'
        f'<text class="party" x="{RIGHT_X}" y="18" text-anchor="end">{esc(_clip(other, 44))}</text>'
        f'<text class="party-sub" x="{LEFT_X}" y="34">this end</text>'
        f'<text class="party-sub" x="{RIGHT_X}" y="34" text-anchor="end">other end</text>'
        f'<line class="life" x1="{LEFT_X}" y1="42" x2="{LEFT_X}" y2="{height - 4}"/>'
        f'<line class="life" x1="{RIGHT_X}" y1="42" x2="{RIGHT_X}" y2="{height - 4}"/>'
        + "".join(rows)
        + "</svg>"
    )


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _ladder_table(steps: list[LadderStep]) -> str:
    rows = []
    for s in steps:
        who = {"out": "this end → other end", "in": "other end → this end"}.get(s.dir, "failover")
        mark = " (T.38)" if "t38" in s.tags else ""
        rows.append(
            f'<tr class="{esc(" ".join(sorted(s.tags)))}"><td>{s.t:.3f} s</td><td>{esc(who)}</td>'
            f"<td><code>{esc(s.line)}</code></td><td>{esc(s.note)}{mark}</td></tr>"
        )
    return (
        '<details class="alt" open><summary>The SIP ladder as a table</summary><table class="ladder-table">'
        "<thead><tr><th>time</th><th>direction</th><th>first line</th><th>meaning</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></details>"
    )


# --- the T.30 timeline ---------------------------------------------------------------------------------
@dataclass
class PageRow:
    page: int
    start: float | None  # engine seconds when its image began (after CFR or the previous page)
    done: float
    info: dict[str, Any]


def page_rows(report: dict[str, Any]) -> list[PageRow]:
    """Each page with the time it took: from the confirmation before it (CFR, or the previous page's
    MCF/RTP) to the moment it was confirmed (sender) or received (receiver)."""
    t30 = report.get("t30") or []
    rows: list[PageRow] = []
    previous: float | None = None
    for p in report.get("pages") or []:
        done = float(p.get("at", 0.0))
        starts = [
            float(m["at"]) for m in t30 if m.get("name") in ("CFR", "MCF", "RTP") and m.get("at", 0) < done
        ]
        start = max([x for x in starts if previous is None or x >= previous], default=previous)
        rows.append(PageRow(int(p.get("page", len(rows) + 1)), start, done, p))
        previous = done
    return rows


def _dpi(ppm: Any) -> int:
    return round(float(ppm) * 0.0254) if isinstance(ppm, int | float) else 0


def _resolution_words(x: Any, y: Any) -> str:
    dx, dy = _dpi(x), _dpi(y)
    if not dx or not dy:
        return "?"
    name = {98: "standard", 196: "fine", 391: "superfine", 200: "fine", 100: "standard"}.get(dy, "")
    return f"{dx}×{dy} dpi" + (f" ({name})" if name else "")


def _timeline_svg(report: dict[str, Any], uid: str) -> str:
    t30 = report.get("t30") or []
    offset = report.get("t30_started_at")
    base = float(offset) if isinstance(offset, int | float) else 0.0
    pages = page_rows(report)
    end = max([float(m.get("at", 0)) for m in t30] + [p.done for p in pages] + [1.0]) + base
    duration = report.get("duration_seconds")
    if isinstance(duration, int | float) and isinstance(offset, int | float):
        end = max(end, float(duration))
    left, right = 20, WIDTH - 20
    scale = (right - left) / end

    def x(engine_t: float) -> float:
        return round(left + (engine_t + base) * scale, 1)

    # messages: sent above the axis, received below, labels stacked in lanes so none overlap
    lanes: dict[str, list[float]] = {"tx": [], "rx": []}
    placed: list[tuple[dict[str, Any], str, int]] = []
    for m in t30:
        direction = "tx" if m.get("direction") == "tx" else "rx"
        mx = x(float(m.get("at", 0)))
        ends = lanes[direction]
        lane = next((i for i, e in enumerate(ends) if e <= mx - 2), len(ends))
        if lane == len(ends):
            ends.append(0.0)
        ends[lane] = mx + 8 * len(str(m.get("name", "?"))) + 4
        placed.append((m, direction, lane))
    axis_y = 40 + 14 * max(len(lanes["tx"]), 1)
    parts: list[str] = []
    # phases: training bands (DCS -> CFR/FTT) and page bands
    dcs_at: float | None = None
    for m in t30:
        name, at = m.get("name"), float(m.get("at", 0))
        if name == "DCS":
            dcs_at = at
        elif name in ("CFR", "FTT") and dcs_at is not None:
            cls = "training" if name == "CFR" else "training failed"
            words = "training" if name == "CFR" else "training failed"
            parts.append(
                f'<g class="band {cls}"><title>{words} (TCF) {dcs_at + base:.2f}–{at + base:.2f} s</title>'
                f'<rect x="{x(dcs_at)}" y="{axis_y - 14}" width="{max(x(at) - x(dcs_at), 2)}" height="28"/>'
                f'<text x="{(x(dcs_at) + x(at)) / 2}" y="{axis_y + 4}">'
                f"{'TCF' if name == 'CFR' else 'FTT'}</text></g>"
            )
            dcs_at = None
    for p in pages:
        start = p.start if p.start is not None else p.done
        rate = p.info.get("bit_rate")
        ecm = "ECM" if p.info.get("ecm") else "no ECM"
        parts.append(
            f'<g class="band page"><title>page {p.page}: {start + base:.2f}–{p.done + base:.2f} s, '
            f'{esc(rate)} bit/s, {ecm}</title><rect x="{x(start)}" y="{axis_y - 14}" '
            f'width="{max(x(p.done) - x(start), 2)}" height="28"/>'
            f'<text x="{(x(start) + x(p.done)) / 2}" y="{axis_y + 4}">p{p.page}</text></g>'
        )
    height = axis_y + 30 + 14 * len(lanes["rx"]) + 34
    # media switch markers (call time; only when the engine's start on that clock is known)
    if isinstance(offset, int | float):
        for e in (report.get("media") or {}).get("events") or []:
            if e.get("event") in ("media t38", "media g711") and isinstance(e.get("at"), int | float):
                mx = round(left + float(e["at"]) * scale, 1)
                what = "T.38" if e["event"] == "media t38" else "G.711"
                parts.append(
                    f'<g class="media-mark"><title>{what} from {float(e["at"]):.3f} s</title>'
                    f'<line x1="{mx}" y1="{axis_y - 18}" x2="{mx}" y2="{axis_y + 18}"/></g>'
                )
    for m, direction, lane in placed:
        at = float(m.get("at", 0))
        mx = x(at)
        label = str(m.get("name", "?"))
        ty = axis_y - 20 - 14 * lane if direction == "tx" else axis_y + 28 + 14 * lane
        ly = axis_y - 14 if direction == "tx" else axis_y + 14
        cls = "msg " + direction + (" bad" if label in ("RTN", "FTT", "PPR", "CRP") else "")
        who = "sent by this end" if direction == "tx" else "received from the other end"
        parts.append(
            f'<g class="{cls}"><title>{at + base:.2f} s {esc(label)} {who}: '
            f"{esc(T30_MEANINGS.get(label, ''))}"
            f'</title><line x1="{mx}" y1="{ly}" x2="{mx}" y2="{ty + (3 if direction == "tx" else -10)}"/>'
            f'<text x="{mx}" y="{ty}">{esc(label)}</text></g>'
        )
    result = report.get("result") or {}
    first = next((m for m in t30 if m.get("name") in ("DIS", "DTC")), None)
    dcn = next((m for m in reversed(t30) if m.get("name") == "DCN"), None)
    clock = "call" if isinstance(offset, int | float) else "fax engine"
    desc = (
        f"T.30 messages on a time line in seconds of the {clock}: "
        f"sent by this end above the line, received below. "
        + (
            f"It starts with {first['name']} at {float(first['at']) + base:.1f} s. "
            if first
            else "No DIS was seen. "
        )
        + (f"{len(pages)} page(s); " if pages else "No page got through; ")
        + (f"DCN at {float(dcn['at']) + base:.1f} s." if dcn else "no DCN (the session did not end cleanly).")
        + (f" Result: {result.get('text')}." if result else "")
    )
    ticks = []
    step = next(s for s in (1, 2, 5, 10, 20, 30, 60, 120, 300, 600) if end / s <= 12)
    t = 0
    while t <= end:
        tx_ = round(left + t * scale, 1)
        ticks.append(f'<line class="tick" x1="{tx_}" y1="{axis_y + 14}" x2="{tx_}" y2="{axis_y + 18}"/>'
                     f'<text class="tick" x="{tx_}" y="{height - 6}">{t} s</text>')  # fmt: skip
        t += step
    return (
        f'<svg class="timeline" viewBox="0 0 {WIDTH} {height}" width="100%" role="img" '
        f'aria-labelledby="{uid}-tt {uid}-td" preserveAspectRatio="xMidYMin meet">'
        f'<title id="{uid}-tt">T.30 phases of the fax</title><desc id="{uid}-td">{esc(desc)}</desc>'
        f'<text class="lane" x="4" y="14">sent by this end</text>'
        f'<text class="lane" x="4" y="{height - 20}">received from the other end</text>'
        f'<line class="axis" x1="{left}" y1="{axis_y}" x2="{right}" y2="{axis_y}"/>'
        + "".join(ticks)
        + "".join(parts)
        + "</svg>"
    )


def _t30_table(report: dict[str, Any]) -> str:
    base = report.get("t30_started_at")
    b = float(base) if isinstance(base, int | float) else 0.0
    rows = []
    for m in report.get("t30") or []:
        name = str(m.get("name", ""))
        who = "this end" if m.get("direction") == "tx" else "other end"
        rows.append(
            f"<tr><td>{float(m.get('at', 0)) + b:.2f} s</td><td>{who}</td><td>{esc(name)}</td>"
            f"<td>{esc(T30_MEANINGS.get(name, ''))}</td></tr>"
        )
    if not rows:
        return '<p class="none">No T.30 message was exchanged: the fax machines never spoke.</p>'
    return (
        '<details class="alt"><summary>The T.30 messages as a table</summary><table class="t30-table">'
        "<thead><tr><th>time</th><th>sent by</th><th>message</th><th>meaning</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></details>"
    )


def _pages_table(report: dict[str, Any]) -> str:
    rows = []
    base = report.get("t30_started_at")
    b = float(base) if isinstance(base, int | float) else 0.0
    for p in page_rows(report):
        i = p.info
        took = f"{p.done - p.start:.1f} s" if p.start is not None else "?"
        bad = int(i.get("bad_rows", 0) or 0)
        rows.append(
            f'<tr class="page{" bad" if bad else ""}"><td>{p.page}</td>'
            f"<td>{p.done + b:.1f} s</td><td>{took}</td>"
            f"<td>{esc(i.get('bit_rate'))} bit/s</td><td>{'yes' if i.get('ecm') else 'no'}</td>"
            f"<td>{esc(_resolution_words(i.get('x_resolution'), i.get('y_resolution')))}</td>"
            f"<td>{esc(i.get('width'))}×{esc(i.get('length'))}</td><td>{bad}</td></tr>"
        )
    if not rows:
        return '<p class="none">No page was transferred.</p>'
    return (
        '<table class="pages"><caption>Pages</caption><thead><tr><th>page</th><th>done at</th>'
        "<th>time on the line</th><th>bit rate</th><th>ECM</th><th>resolution</th><th>size (pixels)</th>"
        f"<th>bad rows</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


# --- counters ----------------------------------------------------------------------------------------------
def _get(d: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict):
            return None
        d = d.get(part)  # type: ignore[assignment]
    return d


def _counters_table(caption: str, data: dict[str, Any], spec: tuple[tuple[str, str], ...]) -> str:
    rows = []
    for key, meaning in spec:
        value = _get(data, key)
        if value is None:
            continue
        bad = key in BAD_COUNTERS and bool(value)
        rows.append(
            f'<tr class="{"bad" if bad else ""}"><th scope="row"><code>{esc(key)}</code></th>'
            f"<td>{esc(value)}</td><td>{esc(meaning)}</td></tr>"
        )
    latch = data.get("latch")
    if isinstance(latch, dict):
        learned = latch.get("learned_addr")
        where = (
            f"{learned[0]}:{learned[1]}" if isinstance(learned, list | tuple) and len(learned) == 2 else "-"
        )
        rows.append(
            f'<tr><th scope="row"><code>latch</code></th><td>{esc(where)}</td><td>symmetric media: where '
            "this end sent once it learned the other side's real source "
            f"({esc(latch.get('learned_by'))})</td></tr>"
        )
    return (
        f'<table class="counters"><caption>{esc(caption)}</caption><thead><tr><th>counter</th><th>value</th>'
        f"<th>what it means</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _counters(report: dict[str, Any]) -> str:
    out = []
    udptl, rtp = report.get("udptl"), report.get("rtp")
    if isinstance(udptl, dict):
        out.append(_counters_table("UDPTL (T.38) counters", udptl, UDPTL_COUNTERS))
    if isinstance(rtp, dict) and (
        (_get(rtp, "received.packets_received") or _get(rtp, "sent.packets_sent"))
        or not isinstance(udptl, dict)
    ):
        codec = rtp.get("codec") or ""
        out.append(_counters_table(f"RTP (G.711 {codec}) counters", rtp, RTP_COUNTERS))
    if not out:
        return '<p class="none">No media stream was set up.</p>'
    return "".join(out)


# --- the end reason -----------------------------------------------------------------------------------------
def end_reason_words(report: dict[str, Any]) -> str:
    """The outcome of the call in one or two sentences for a fax operator (the technical reason follows
    them on the page). Success only when T.30 phase E said so, as the result does."""
    result = report.get("result") or {}
    sending = report.get("direction") == "send"
    reason = str(report.get("end_reason") or "")
    pages = int(result.get("pages", 0) or 0)
    if result.get("ok") and (sending or pages > 0):
        what = "sent" if sending else "received"
        how = "each confirmed by the receiver (MCF)" if sending else "the sender ended cleanly"
        rate = result.get("bit_rate")
        media = "T.38" if result.get("media") == "t38" else "G.711 audio"
        return (
            f"The fax was {what} completely: {pages} page{'s' if pages != 1 else ''}, {how}, "
            f"at {rate} bit/s{' with ECM' if result.get('ecm') else ''} over {media}."
        )
    m = re.match(r"SIP (\d{3})", reason)
    status = int(m.group(1)) if m else (report.get("sip") or {}).get("final_status")
    if result == {} and isinstance(status, int) and status >= 300:
        words = SIP_SENTENCES.get(status) or sip_status_words(status).capitalize() + "."
        return f"The call was not connected (SIP {status}). {words}".strip()
    sentences = []
    for prefix, words in END_REASONS:
        if reason.startswith(prefix):
            sentences.append(words)
            break
    if result:
        code = result.get("code")
        row = t30_completion(code) if isinstance(code, int) else None
        fax = f"The fax failed: {row.meaning if row else result.get('text', 'unknown T.30 error')}"
        if pages:
            got = f"{pages} page was" if pages == 1 else f"{pages} pages were"
            fax += f"; {got} confirmed before that" if sending else f"; {got} received before that and kept"
        sentences.append(fax + ".")
    elif not sentences:
        sentences.append("The call ended before any fax was exchanged.")
    return " ".join(sentences)


# --- the whole -------------------------------------------------------------------------------------------
def _summary(report: dict[str, Any]) -> str:
    mine, other = _party_names(report)
    result = report.get("result") or {}
    started = report.get("started_at")
    when = (
        datetime.fromtimestamp(float(started), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        if isinstance(started, int | float)
        else "?"
    )
    sending = report.get("direction") == "send"
    media = report.get("media") or {}
    rows = [
        ("direction", "sent by this end" if sending else "received by this end"),
        ("this end", mine),
        ("other end", other),
        ("started", when),
        ("duration", _seconds(report.get("duration_seconds"))),
        (
            "media",
            {"t38": "T.38 (UDPTL)", "g711": f"G.711 audio {media.get('audio_codec') or ''}"}.get(
                str(media.get("final")), "none"
            ),
        ),
        ("T.38 policy", report.get("policy", "")),
    ]
    t38 = (media.get("t38") or {}).get("negotiated")
    if isinstance(t38, dict):
        rows.append(("T.38 session", f"version {t38.get('version')}, up to {t38.get('max_bit_rate')} bit/s, "
                     f"{t38.get('rate_management')}, error correction {t38.get('udp_ec')}, "
                     f"other side's largest datagram {t38.get('send_max_datagram')} bytes"))  # fmt: skip
    if result:
        rows.append(("pages", str(result.get("pages", 0))))
        rows.append(
            ("bit rate", f"{result['bit_rate']} bit/s" if result.get("bit_rate") else "not negotiated")
        )
        rows.append(("ECM", "yes" if result.get("ecm") else "no"))
    files = report.get("files") or {}
    for kind in ("tiff", "pdf"):
        if files.get(kind):
            rows.append((f"{kind.upper()} file", str(files[kind])))
    rows.append(("Call-ID", report.get("call_id", "")))
    return '<dl class="summary">' + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in rows) + "</dl>"


def render_call_report(report: dict[str, Any], *, id_prefix: str | None = None) -> str:
    """The call report as an HTML fragment (a ``<section>``): verdict, end reason in words, summary, SIP
    ladder, T.30 timeline, pages, counters. ``id_prefix`` keeps element ids unique when a page shows
    several reports (by default one is derived from the Call-ID)."""
    if not isinstance(report, dict):
        raise TypeError("a call report is a JSON object (dict)")
    uid = (
        id_prefix
        or "cr-"
        + hashlib.sha1(
            f"{report.get('call_id')}{report.get('started_at')}".encode(), usedforsecurity=False
        ).hexdigest()[:8]
    )
    result = report.get("result") or {}
    sending = report.get("direction") == "send"
    ok = bool(result.get("ok")) and (sending or int(result.get("pages", 0) or 0) > 0)
    steps = ladder_steps(report)
    technical = [f"end reason: {report.get('end_reason') or '-'}"]
    if result:
        technical.append(f"T.30 result {result.get('code')}: {result.get('text')}")
    sip = report.get("sip") or {}
    if sip.get("final_status") and not str(report.get("end_reason") or "").startswith("SIP "):
        technical.append(f"SIP {sip.get('final_status')} {sip.get('reason') or ''}".strip())
    attempts = sip.get("attempts") or []
    attempts_html = ""
    if len(attempts) > 1:
        attempts_html = (
            '<ol class="attempts">'
            + "".join(
                f"<li><code>{esc(a.get('call_id'))}</code>: "
                f"{esc(a.get('status'))} {esc(a.get('reason'))}</li>"
                for a in attempts
            )
            + "</ol>"
        )
    ladder = (
        f'<div class="drawing">{_ladder_svg(report, steps, uid)}</div>{_ladder_table(steps)}'
        if steps
        else '<p class="none">No SIP message was recorded for this call.</p>'
    )
    timeline = f'<div class="drawing">{_timeline_svg(report, uid)}</div>' if report.get("t30") else ""
    return (
        f'<section class="call-report {"ok" if ok else "failed"}" id="{uid}" aria-labelledby="{uid}-h">'
        f'<h2 id="{uid}-h">{"Fax " + ("sent" if sending else "received") if ok else "Fax failed"}</h2>'
        f'<p class="end-reason">{esc(end_reason_words(report))}</p>'
        f'<p class="technical">{esc("; ".join(technical))}</p>'
        f"{_summary(report)}"
        f"<h3>SIP ladder</h3>{attempts_html}{ladder}"
        f"<h3>T.30 phases</h3>{timeline}{_t30_table(report)}"
        f"<h3>Pages</h3>{_pages_table(report)}"
        f"<h3>Media counters</h3>{_counters(report)}"
        "</section>"
    )


#: The standalone page's style: readable without the console, at phone width too.
PAGE_CSS = """
body{font:15px/1.4 system-ui,sans-serif;margin:0 auto;max-width:60rem;padding:0.75rem;color:#111}
h2{margin:0.2rem 0}
.call-report.failed h2{color:#a00}
.call-report.ok h2{color:#064}
.end-reason{font-size:1.1rem;font-weight:600}
.technical{color:#444;font-size:0.9rem}
dl.summary{display:grid;grid-template-columns:max-content 1fr;gap:0.1rem 0.8rem}
dl.summary dt{font-weight:600}
dl.summary dd{margin:0;overflow-wrap:anywhere}
table{border-collapse:collapse;margin:0.5rem 0;display:block;overflow-x:auto;max-width:100%}
th,td{border:1px solid #ccc;padding:0.15rem 0.4rem;text-align:left;vertical-align:top}
caption{text-align:left;font-weight:600}
tr.bad td,tr.bad th{background:#fde8e8}
tr.t38 td{background:#e6f0ff}
code{overflow-wrap:anywhere}
.drawing{overflow-x:auto}
svg{height:auto;display:block;margin:0.5rem 0;font-family:system-ui,sans-serif}
.drawing svg{min-width:32rem}
svg text{font-size:11px;fill:#111}
svg .party{font-weight:700;font-size:12px}
svg .party-sub,svg .lane{fill:#555}
svg text.label{text-anchor:middle}
svg .life{stroke:#888;stroke-width:2}
svg .arrow line{stroke:#333;stroke-width:1.3}
svg .arrow polygon{fill:#333}
svg .arrow.t38 line{stroke:#0a58ca;stroke-width:3}
svg .arrow.t38 polygon{fill:#0a58ca}
svg .arrow.t38 text.label{fill:#0a58ca;font-weight:700}
svg .arrow.failed line{stroke:#b00}
svg .arrow.failed polygon{fill:#b00}
svg .arrow.failed text.label{fill:#b00}
svg .arrow.prack line{stroke-dasharray:4 3}
svg .arrow.resent line{stroke-dasharray:1 3}
svg .failover rect{fill:#fff4d6;stroke:#c90;stroke-dasharray:4 3}
svg .failover text{text-anchor:middle}
svg .sep{stroke:#999;stroke-dasharray:6 4}
svg text.sep{stroke:none;fill:#555}
svg .axis{stroke:#333;stroke-width:1.5}
svg .tick{stroke:#333}
svg text.tick{stroke:none;text-anchor:middle;fill:#555}
svg .band rect{fill:#d9ecd9;stroke:#6a6}
svg .band.training rect{fill:#fff1c2;stroke:#cb8}
svg .band.failed rect{fill:#f7c6c6;stroke:#c55}
svg .band text{text-anchor:middle;font-size:10px}
svg .msg line{stroke:#666}
svg .msg text{text-anchor:middle;font-weight:600}
svg .msg.bad text{fill:#b00}
svg .media-mark line{stroke:#0a58ca;stroke-dasharray:3 3}
svg .media-mark text{fill:#0a58ca}
@media (max-width:40rem){body{font-size:14px}th,td{padding:0.1rem 0.25rem}}
"""


def render_call_report_page(report: dict[str, Any], title: str | None = None) -> str:
    """A standalone HTML page with the report drawn (inline CSS, no script, no external asset)."""
    heading = title or f"vfax call report {report.get('call_id', '')}"
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(heading)}</title><style>{PAGE_CSS}</style></head>"
        f"<body><h1>{esc(heading)}</h1>{render_call_report(report)}</body></html>\n"
    )

/* vfax native RTP stream: one G.711 fax call's 20 ms tick in C.
 *
 * Why: at a few hundred simultaneous G.711 calls the Python tick (t38/audio_transport.py) costs more
 * than spandsp's modems and the kernel together (perf over bench/rtp_clock.py: libpython + cffi 55 %
 * of the process's CPU). This file does the same work per stream and tick, with the same rules:
 * fax_tx -> G.711 -> RTP header -> send; drain the socket into the playout buffer; play one frame
 * into fax_rx (fax_rx_fillin for what never arrived). The playout buffer is a line-for-line port of
 * t38.rtp.PlayoutBuffer; tests/test_rtp_native.py feeds both the same random streams and compares.
 *
 * It calls spandsp through function pointers handed over by Python (vfax_rtp_set_ops), so it links
 * against nothing but libc, and it never calls Python: what needs Python (logging, a media timeout,
 * the fax result) is flagged in `attention` and the tick returns the streams that have flags.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "rtp_native.h"

#define FRAME 160
#define HEADER 12
#define PACKET (HEADER + FRAME)
#define RX_SIZE 2048
#define SAMPLE_RATE 8000.0
#define MAX_DROPOUT 3000
#define MAX_MISORDER 100
#define DUPLICATE_WINDOW 64
#define STALE_SWITCH_BACK 10
#define MAX_DATAGRAMS_PER_TICK 32

/* t38.rtp.PushResult */
#define ACCEPTED 0
#define DUPLICATE 1
#define LATE 2
#define IGNORED_PT 3
#define STALE_SSRC 4
#define OVERSIZE 5
#define MALFORMED -1

/* what vfax_rtp_pop returns (the frame is in s->out, s->out_mask) */
#define POP_WHOLE 0
#define POP_MISSING 1
#define POP_PARTIAL 2
#define POP_IDLE 3

/* attention bits (t38/native_rtp.py mirrors them) */
#define ATT_TIMEOUT 1
#define ATT_MALFORMED 2
#define ATT_SEND_ERROR 4
#define ATT_SOCKET_ERROR 8
#define ATT_ENGINE_STOPPED 16
#define ATT_LEARNING 32

/* malformed reasons (t38/native_rtp.py has the texts) */
#define BAD_SHORT 1
#define BAD_VERSION 2
#define BAD_CSRC 3
#define BAD_EXTENSION 4
#define BAD_EXTENSION_LENGTH 5
#define BAD_PADDING 6

static vfax_ops_t ops;

void vfax_rtp_set_ops(const vfax_ops_t *o)
{
    ops = *o;
}

static void store(vfax_rtp_t *s, int64_t pos, const uint8_t *payload, int n)
{
    int cap = s->capacity;
    int i = (int) (pos % cap);
    int first = n < cap - i ? n : cap - i;

    memcpy(s->ring + i, payload, first);
    memset(s->mask + i, 1, first);
    if (first < n) {
        memcpy(s->ring, payload + first, n - first);
        memset(s->mask, 1, n - first);
    }
}

static int64_t anchor(vfax_rtp_t *s, int64_t ext_ts)
{
    int64_t pos = s->cursor + s->delay;

    s->offset = pos - ext_ts;
    if (!s->has_first_pos) {
        s->first_pos = pos;
        s->has_first_pos = 1;
    }
    return pos;
}

static int64_t lost_now(const vfax_rtp_t *s)
{
    int64_t expected = s->max_ext_seq - s->base_ext_seq + 1;
    int64_t lost = expected - s->received;

    return lost > 0 ? lost : 0;
}

static void new_stream(vfax_rtp_t *s, uint32_t ssrc, uint32_t seq, uint32_t ts, double arrival)
{
    if (s->has_ssrc)
        s->lost_before += lost_now(s);
    s->ssrc = ssrc;
    s->has_ssrc = 1;
    s->max_ext_seq = seq;
    s->base_ext_seq = seq;
    s->window = 1;
    s->received = 0;
    s->last_ts = ts;
    s->last_ext_ts = ts;
    s->transit = arrival * SAMPLE_RATE - (double) ts;
    s->jitter = 0.0;
    s->late_streak = 0;
    anchor(s, ts);
}

/* 1 in order, 0 reordered, -1 duplicate (PlayoutBuffer._sequence_jump) */
static int sequence_jump(vfax_rtp_t *s, int d, uint32_t seq, uint32_t ts, uint32_t ssrc, double arrival)
{
    if (d >= 0x8000)
        d -= 0x10000;
    if (d > MAX_DROPOUT || d < -MAX_MISORDER) {
        s->resyncs++;
        new_stream(s, ssrc, seq, ts, arrival);
        return 1;
    }
    if (d > 0) {
        s->max_ext_seq += d;
        s->window = (d >= DUPLICATE_WINDOW ? 0 : s->window << d) | 1;
        return 1;
    }
    if (-d < DUPLICATE_WINDOW) {
        uint64_t bit = (uint64_t) 1 << -d;
        if (s->window & bit) {
            s->duplicates++;
            return -1;
        }
        s->window |= bit;
    }
    if (s->max_ext_seq + d < s->base_ext_seq)
        s->base_ext_seq = s->max_ext_seq + d;
    s->reordered++;
    return 0;
}

/* a packet that is not simply on time (PlayoutBuffer._place) */
static int place(vfax_rtp_t *s, int64_t pos, int n, int64_t ext_ts, const uint8_t *payload, int in_order,
                 double arrival)
{
    int64_t cursor = s->cursor;
    int64_t end;

    if (!n)
        return ACCEPTED;
    end = pos + n;
    if (end <= cursor) {
        if (in_order && cursor - end > s->capacity) {
            s->resyncs++;
        } else {
            if (s->has_last_play_time) {
                double late_by = arrival - s->last_play_time + (double) (cursor - s->frame - pos) / SAMPLE_RATE;
                if (late_by > s->max_late)
                    s->max_late = late_by;
            }
            s->late_streak++;
            if (s->late_streak < s->late_resync) {
                s->late++;
                return LATE;
            }
            s->resyncs++;
        }
        pos = anchor(s, ext_ts);
        end = pos + n;
    }
    s->late_streak = 0;
    if (end - cursor > s->capacity) {
        if (n > s->capacity - s->delay - s->frame) {
            s->oversize++;
            return OVERSIZE;
        }
        s->resyncs++;
        pos = anchor(s, ext_ts);
        end = pos + n;
    }
    if (pos < cursor) {
        payload += cursor - pos;
        pos = cursor;
        n = (int) (end - pos);
    }
    store(s, pos, payload, n);
    if (end - cursor > s->max_depth)
        s->max_depth = end - cursor;
    return ACCEPTED;
}

int vfax_rtp_push(vfax_rtp_t *s, int pt, uint32_t seq, uint32_t ts, uint32_t ssrc,
                  const uint8_t *payload, int n, double arrival)
{
    int in_order;
    int64_t dt;
    int64_t ext_ts;
    int64_t pos;
    int64_t end;
    int64_t cursor;
    double transit;
    double dtr;

    s->packets_received++;
    s->octets_received += n;
    if (pt != s->payload_type) {
        s->ignored_pt++;
        return IGNORED_PT;
    }
    if (s->has_ssrc && ssrc == (uint32_t) s->ssrc) {
        int d;

        s->stale_streak = 0;
        d = (int) ((seq - (uint32_t) s->max_ext_seq) & 0xFFFF);
        if (d == 1) {
            s->max_ext_seq++;
            s->window = (s->window << 1) | 1;
            in_order = 1;
        } else {
            in_order = sequence_jump(s, d, seq, ts, ssrc, arrival);
            if (in_order < 0)
                return DUPLICATE;
        }
    } else {
        if (s->has_prev_ssrc && ssrc == (uint32_t) s->prev_ssrc && s->stale_streak < STALE_SWITCH_BACK) {
            s->stale_streak++;
            s->stale_ssrc++;
            return STALE_SSRC;
        }
        if (s->has_ssrc) {
            s->ssrc_changes++;
            s->prev_ssrc = s->ssrc;
            s->has_prev_ssrc = 1;
        }
        new_stream(s, ssrc, seq, ts, arrival);
        in_order = 1;
    }
    s->received++;
    dt = (int64_t) ((ts - (uint32_t) s->last_ts) & 0xFFFFFFFFu);
    if (dt >= 0x80000000LL)
        dt -= 0x100000000LL;
    ext_ts = s->last_ext_ts + dt;
    if (in_order) {
        s->last_ts = ts;
        s->last_ext_ts = ext_ts;
    }
    transit = arrival * SAMPLE_RATE - (double) ext_ts;
    dtr = transit - s->transit;
    s->jitter += ((dtr < 0 ? -dtr : dtr) - s->jitter) * 0.0625;
    s->transit = transit;
    cursor = s->cursor;
    pos = ext_ts + s->offset;
    end = pos + n;
    if (pos < cursor || end - cursor > s->capacity || !n)
        return place(s, pos, n, ext_ts, payload, in_order, arrival);
    s->late_streak = 0;
    store(s, pos, payload, n);
    if (end - cursor > s->max_depth)
        s->max_depth = end - cursor;
    return ACCEPTED;
}

/* RFC 3550 §5.1 parse (RtpPacket.parse) then push; MALFORMED with s->malformed_reason set */
int vfax_rtp_push_datagram(vfax_rtp_t *s, const uint8_t *data, int size, double arrival)
{
    int offset = HEADER;
    int end = size;
    uint32_t seq;
    uint32_t ts;
    uint32_t ssrc;

    if (size < HEADER) {
        s->malformed_reason = BAD_SHORT;
        return MALFORMED;
    }
    seq = ((uint32_t) data[2] << 8) | data[3];
    ts = ((uint32_t) data[4] << 24) | ((uint32_t) data[5] << 16) | ((uint32_t) data[6] << 8) | data[7];
    ssrc = ((uint32_t) data[8] << 24) | ((uint32_t) data[9] << 16) | ((uint32_t) data[10] << 8) | data[11];
    if (data[0] != 0x80) {
        int first = data[0];
        int cc = first & 0x0F;

        if ((first >> 6) != 2) {
            s->malformed_reason = BAD_VERSION;
            return MALFORMED;
        }
        if (cc) {
            if (size < offset + 4 * cc) {
                s->malformed_reason = BAD_CSRC;
                return MALFORMED;
            }
            offset += 4 * cc;
        }
        if (first & 0x10) {
            int words;

            if (size < offset + 4) {
                s->malformed_reason = BAD_EXTENSION;
                return MALFORMED;
            }
            words = (data[offset + 2] << 8) | data[offset + 3];
            offset += 4;
            if (size < offset + 4 * words) {
                s->malformed_reason = BAD_EXTENSION_LENGTH;
                return MALFORMED;
            }
            offset += 4 * words;
        }
        if (first & 0x20) {
            int padding = data[size - 1];

            if (padding == 0 || padding > size - offset) {
                s->malformed_reason = BAD_PADDING;
                return MALFORMED;
            }
            end -= padding;
        }
    }
    return vfax_rtp_push(s, data[1] & 0x7F, seq, ts, ssrc, data + offset, end - offset, arrival);
}

/* the next frame into s->out / s->out_mask (PlayoutBuffer.pop) */
int vfax_rtp_pop(vfax_rtp_t *s, double play_time)
{
    int f = s->frame;
    int64_t cursor = s->cursor;
    int i = (int) (cursor % s->capacity);
    const uint8_t *mask = s->mask + i;
    int present = 0;
    int k;

    s->last_play_time = play_time;
    s->has_last_play_time = 1;
    s->cursor = cursor + f;
    for (k = 0; k < f; k++)
        present += mask[k];
    if (present == f) {
        memcpy(s->out, s->ring + i, f);
        memset(s->mask + i, 0, f);
        s->frames_played++;
        return POP_WHOLE;
    }
    if (present == 0) {
        if (!s->has_first_pos || cursor < s->first_pos)
            s->frames_idle++;
        else {
            s->frames_missing++;
            s->samples_missing += f;
            return POP_MISSING;
        }
        return POP_IDLE;
    }
    memcpy(s->out, s->ring + i, f);
    memcpy(s->out_mask, mask, f);
    memset(s->mask + i, 0, f);
    s->samples_missing += f - present;
    s->frames_partial++;
    return POP_PARTIAL;
}

/* file what the socket holds (RtpEndpoint._drain); returns datagrams read */
int vfax_rtp_drain(vfax_rtp_t *s, double now, int limit)
{
    int got = 0;
    int read = 0;

    if (s->learning) {  /* unconnected: only Python sees each datagram's source */
        s->attention |= ATT_LEARNING;
        return 0;
    }
    while (read < limit) {
        ssize_t n = recv(s->fd, s->rx_buf, RX_SIZE, MSG_DONTWAIT);

        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            if (errno == EINTR)
                continue;
            s->icmp_errors++;
            s->last_errno = errno;
            s->attention |= ATT_SOCKET_ERROR;
            read++;
            continue;
        }
        read++;
        if (!s->connected) {
            s->strangers++;
            continue;
        }
        if (vfax_rtp_push_datagram(s, s->rx_buf, (int) n, now) == MALFORMED) {
            if (++s->malformed == 1)
                s->attention |= ATT_MALFORMED;
            continue;
        }
        got = 1;
    }
    if (got)
        s->last_rx = now;
    return read;
}

static int engine_live(const vfax_rtp_t *s)
{
    return s->fax != NULL && s->cell != NULL && s->cell[0];
}

static void play(vfax_rtp_t *s, int kind)
{
    int f = s->frame;
    int live = engine_live(s);

    if (kind == POP_IDLE)
        kind = POP_MISSING;
    if (s->cell != NULL)
        s->cell[1] += f;
    if (!live)
        return;
    if (kind == POP_WHOLE) {
        ops.g711_decode(s->g711, s->pcm, s->out, f);
        ops.fax_rx(s->fax, s->pcm, f);
    } else if (kind == POP_MISSING) {
        ops.fax_rx_fillin(s->fax, f);
    } else {
        int k = 0;

        while (k < f && engine_live(s)) {
            int present = s->out_mask[k];
            int e = k;

            while (e < f && s->out_mask[e] == present)
                e++;
            if (present) {
                ops.g711_decode(s->g711, s->pcm, s->out + k, e - k);
                ops.fax_rx(s->fax, s->pcm, e - k);
            } else {
                ops.fax_rx_fillin(s->fax, e - k);
            }
            k = e;
        }
    }
}

static void tick_one(vfax_rtp_t *s, double now)
{
    int f = s->frame;
    int n = 0;
    uint8_t *p = s->tx_packet;

    if (s->fd < 0)  /* closed, or left the group in the middle of this tick */
        return;
    if (engine_live(s))
        n = ops.fax_tx(s->fax, s->pcm, f);
    if (n < f)
        memset(s->pcm + n, 0, (size_t) (f - n) * sizeof(int16_t));
    if (s->connected || s->learning) {
        ops.g711_encode(s->g711, p + HEADER, s->pcm, f);
        p[0] = 0x80;
        p[1] = (uint8_t) (s->tx_marker | s->tx_pt);
        p[2] = (uint8_t) (s->tx_seq >> 8);
        p[3] = (uint8_t) s->tx_seq;
        p[4] = (uint8_t) (s->tx_ts >> 24);
        p[5] = (uint8_t) (s->tx_ts >> 16);
        p[6] = (uint8_t) (s->tx_ts >> 8);
        p[7] = (uint8_t) s->tx_ts;
        p[8] = (uint8_t) (s->tx_ssrc >> 24);
        p[9] = (uint8_t) (s->tx_ssrc >> 16);
        p[10] = (uint8_t) (s->tx_ssrc >> 8);
        p[11] = (uint8_t) s->tx_ssrc;
        s->tx_marker = 0;
        s->tx_seq = (s->tx_seq + 1) & 0xFFFF;
        s->tx_ts += f;
        s->packets_sent++;
        s->octets_sent += f;
        if (!s->connected)
            s->attention |= ATT_LEARNING;  /* Python sends it to the address learnt so far */
        else if (send(s->fd, p, PACKET, MSG_DONTWAIT) < 0) {
            s->last_errno = errno;
            if (++s->send_errors == 1)
                s->attention |= ATT_SEND_ERROR;
        }
    }
    vfax_rtp_drain(s, now, MAX_DATAGRAMS_PER_TICK);
    play(s, vfax_rtp_pop(s, now));
    if (s->media_timeout >= 0 && !s->timed_out && now - s->last_rx > s->media_timeout) {
        s->timed_out = 1;
        s->attention |= ATT_TIMEOUT;
    }
    if (s->was_live && !engine_live(s)) {
        s->was_live = 0;
        s->attention |= ATT_ENGINE_STOPPED;
    }
}

/* one 20 ms tick of every stream; the indices of streams with attention bits go to attention_out */
int vfax_rtp_tick(vfax_rtp_t **streams, int count, double now, int *attention_out)
{
    int flagged = 0;
    int i;

    for (i = 0; i < count; i++) {
        vfax_rtp_t *s = streams[i];

        s->attention = 0;
        tick_one(s, now);
        if (s->attention)
            attention_out[flagged++] = i;
    }
    return flagged;
}

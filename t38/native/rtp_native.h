/* vfax native RTP stream: the G.711 per-tick hot path of t38/audio_transport.py in C.
   This file is pure declarations: cffi's cdef reads it as it is (t38/native_rtp.py), so the layout
   Python sees is the one C compiles. Sizes are literals for that reason (cdef has no preprocessor):
   160 = samples per 20 ms frame, 172 = 12-octet RTP header + 160, 2048 = largest datagram read. */

typedef struct vfax_ops {
    int (*fax_rx)(void *s, int16_t *amp, int len);
    int (*fax_tx)(void *s, int16_t *amp, int max_len);
    int (*fax_rx_fillin)(void *s, int len);
    int (*g711_encode)(void *s, uint8_t *g711, const int16_t *amp, int len);
    int (*g711_decode)(void *s, int16_t *amp, const uint8_t *g711, int g711_bytes);
} vfax_ops_t;

typedef struct vfax_rtp {
    /* wiring, set by Python */
    int fd;                     /* the UDP socket, -1 before start */
    int connected;              /* connect()-ed to the peer: send, and file what arrives */
    int learning;               /* symmetric RTP still learning the peer (t38.latch): the tick builds the
                                   packet and leaves sending it and reading the socket to Python */
    void *fax;                  /* fax_state_t *, or NULL: send silence, discard what arrives */
    int64_t *cell;              /* the session's [live flag, samples fed]; NULL when fax is NULL */
    void *g711;                 /* g711_state_t * of the negotiated law */
    double media_timeout;       /* seconds without RTP from the peer before a timeout; < 0: none */
    /* what C reports back */
    double last_rx;             /* tick time of the latest datagram from the peer */
    int timed_out;
    int attention;              /* VFAX_ATT_* bits set during the latest tick, cleared by each tick */
    int last_errno;             /* of the latest failed send or queued socket error */
    int malformed_reason;       /* VFAX_BAD_* of the latest malformed datagram */
    int was_live;
    uint64_t strangers;
    uint64_t malformed;
    uint64_t icmp_errors;
    uint64_t send_errors;
    /* sender (t38.rtp.RtpSender) */
    uint32_t tx_ssrc;
    uint32_t tx_ts;
    uint32_t tx_seq;
    uint32_t tx_pt;
    uint32_t tx_marker;
    uint64_t packets_sent;
    uint64_t octets_sent;
    /* playout buffer (t38.rtp.PlayoutBuffer, the same fields and rules) */
    int payload_type;
    int frame;
    int delay;
    int capacity;
    int late_resync;
    uint8_t *ring;
    uint8_t *mask;
    int64_t cursor;
    int64_t first_pos;
    int has_first_pos;
    int64_t ssrc;
    int has_ssrc;
    int64_t prev_ssrc;
    int has_prev_ssrc;
    int64_t offset;
    int64_t max_ext_seq;
    int64_t base_ext_seq;
    uint64_t window;
    int64_t last_ts;
    int64_t last_ext_ts;
    int64_t received;
    int64_t lost_before;
    double transit;
    double jitter;
    int late_streak;
    int stale_streak;
    double last_play_time;
    int has_last_play_time;
    uint64_t packets_received;
    uint64_t octets_received;
    uint64_t late;
    uint64_t duplicates;
    uint64_t reordered;
    uint64_t ignored_pt;
    uint64_t ssrc_changes;
    uint64_t stale_ssrc;
    uint64_t resyncs;
    uint64_t oversize;
    int64_t max_depth;
    double max_late;
    uint64_t frames_played;
    uint64_t frames_partial;
    uint64_t frames_missing;
    uint64_t frames_idle;
    uint64_t samples_missing;
    /* buffers, reused every tick */
    uint8_t tx_packet[172];
    int16_t pcm[160];
    uint8_t out[160];
    uint8_t out_mask[160];
    uint8_t rx_buf[2048];
} vfax_rtp_t;

void vfax_rtp_set_ops(const vfax_ops_t *ops);
int vfax_rtp_push(vfax_rtp_t *s, int pt, uint32_t seq, uint32_t ts, uint32_t ssrc,
                  const uint8_t *payload, int n, double arrival);
int vfax_rtp_push_datagram(vfax_rtp_t *s, const uint8_t *data, int size, double arrival);
int vfax_rtp_pop(vfax_rtp_t *s, double play_time);
int vfax_rtp_drain(vfax_rtp_t *s, double now, int limit);
int vfax_rtp_tick(vfax_rtp_t **streams, int count, double now, int *attention_out);

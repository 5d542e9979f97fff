-- vfax job store on PostgreSQL, version 1: the same tables and rules as the SQLite store (version 4 there).
-- Times are Unix seconds (double precision), written by the nodes, as in SQLite.

-- Outbound jobs: queued -> in_flight -> completed | failed | cancelled (or back to queued to retry).
CREATE TABLE jobs (
    id text PRIMARY KEY,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL,
    document text NOT NULL,
    original text,
    destination text NOT NULL,
    device text,
    priority integer NOT NULL DEFAULT 0,
    not_before double precision NOT NULL,
    attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts integer NOT NULL CHECK (max_attempts >= 1),
    state text NOT NULL CHECK (state IN ('queued', 'in_flight', 'completed', 'failed', 'cancelled')),
    last_status integer,
    last_error text NOT NULL DEFAULT '',
    pages_sent integer NOT NULL DEFAULT 0,
    options jsonb NOT NULL DEFAULT '{}',
    fax_failures integer NOT NULL DEFAULT 0,
    lease_owner text,
    lease_at double precision,
    lease_expires_at double precision,
    cancel_requested boolean NOT NULL DEFAULT false,
    terminal_event_emitted boolean NOT NULL DEFAULT false,
    finished_at double precision,
    -- a job in flight always has an owner and a lease; nothing else has one
    CHECK ((state = 'in_flight') = (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL))
);
-- the claim's ORDER BY, over queued jobs only
CREATE INDEX jobs_due ON jobs (priority DESC, not_before, created_at, id) WHERE state = 'queued';
CREATE INDEX jobs_created ON jobs (created_at, id);
CREATE INDEX jobs_lease ON jobs (lease_expires_at) WHERE state = 'in_flight';
CREATE INDEX jobs_owner ON jobs (lease_owner) WHERE state = 'in_flight';

-- Inbound faxes: receiving -> completed | partial | failed. Written before the call is answered.
CREATE TABLE inbound_faxes (
    id text PRIMARY KEY,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL,
    call_id text NOT NULL,
    caller text NOT NULL DEFAULT '',
    callee text NOT NULL DEFAULT '',
    device text NOT NULL DEFAULT '',
    started_at double precision NOT NULL,
    state text NOT NULL CHECK (state IN ('receiving', 'completed', 'partial', 'failed')),
    pages integer NOT NULL DEFAULT 0,
    remote_csi text NOT NULL DEFAULT '',
    tiff_path text,
    pdf_path text,
    report_path text,
    last_status integer,
    error text NOT NULL DEFAULT '',
    owner text,
    lease_expires_at double precision,
    terminal_event_emitted boolean NOT NULL DEFAULT false,
    finished_at double precision
);
CREATE INDEX inbound_state ON inbound_faxes (state, created_at);
CREATE INDEX inbound_call ON inbound_faxes (call_id);
CREATE INDEX inbound_lease ON inbound_faxes (lease_expires_at) WHERE state = 'receiving';
CREATE INDEX inbound_owner ON inbound_faxes (owner) WHERE state = 'receiving';

-- Events: the outbox. Ids are handed out in commit order (writers take an advisory lock first), so a
-- reader that has seen event n has seen every event before it.
CREATE TABLE events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id text NOT NULL,
    seq integer NOT NULL CHECK (seq >= 1),
    type text NOT NULL CHECK (type IN ('status', 'page', 'terminal')),
    status integer NOT NULL,
    payload jsonb NOT NULL DEFAULT '{}',
    created_at double precision NOT NULL,
    terminal boolean NOT NULL DEFAULT false CHECK (terminal = (type = 'terminal')),
    UNIQUE (job_id, seq)
);
-- the terminal-event rule: one terminal event per job, whoever writes it
CREATE UNIQUE INDEX events_one_terminal ON events (job_id) WHERE terminal;

-- Per-sink delivery records of the outbox.
CREATE TABLE deliveries (
    sink text NOT NULL,
    event_id bigint NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    attempts integer NOT NULL DEFAULT 0,
    next_try double precision,
    delivered_at double precision,
    dead_letter_at double precision,
    last_error text NOT NULL DEFAULT '',
    PRIMARY KEY (sink, event_id)
);
CREATE INDEX deliveries_dead ON deliveries (sink, dead_letter_at) WHERE dead_letter_at IS NOT NULL;

-- Nodes: one row per vfax serve process sharing this database.
CREATE TABLE nodes (
    id text PRIMARY KEY,
    started_at double precision NOT NULL,
    heartbeat_at double precision NOT NULL,
    lease_seconds double precision NOT NULL CHECK (lease_seconds > 0),
    state text NOT NULL CHECK (state IN ('up', 'stopped', 'lost')),
    api text,
    info jsonb NOT NULL DEFAULT '{}'
);

-- Files kept in the database (cluster mode): submitted documents, received TIFF/PDF, call reports.
CREATE TABLE files (
    owner_id text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('document', 'tiff', 'pdf', 'report', 'partial')),
    data bytea NOT NULL,
    size bigint NOT NULL CHECK (size = octet_length(data)),
    sha256 text NOT NULL,
    created_at double precision NOT NULL,
    PRIMARY KEY (owner_id, kind)
);
-- faxes are compressed already (G3/G4, PDF): keep them out of line without recompressing them
ALTER TABLE files ALTER COLUMN data SET STORAGE EXTERNAL;

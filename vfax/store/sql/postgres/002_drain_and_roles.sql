-- A node can be drained (it claims no new work and takes no new calls, lets its calls finish); a
-- role is a named duty that one node at a time holds under a lease, such as delivering one event sink.
ALTER TABLE nodes ADD COLUMN draining boolean NOT NULL DEFAULT false;

CREATE TABLE roles (
    name text PRIMARY KEY,
    node_id text NOT NULL,
    expires_at double precision NOT NULL
);

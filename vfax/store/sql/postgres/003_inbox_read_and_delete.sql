-- Received faxes can be marked read and deleted; a deleted fax keeps its row (marked, files gone) so that
-- its events still name something, and it is no longer listed.
ALTER TABLE inbound_faxes ADD COLUMN read_at double precision;
ALTER TABLE inbound_faxes ADD COLUMN deleted_at double precision;

-- Schema version 2: a conversation's next offset is its highest stored
-- offset plus one, read under a transaction-scoped advisory lock of the
-- conversation, instead of a counter row updated by every batch of appends
-- (a row updated hundreds of times a second leaves chains of dead versions
-- that every lookup of it walks). The counters are dropped, so that a host
-- of the previous release still running fails its appends loudly instead of
-- numbering from a counter that no longer moves.
DROP TABLE switchboard_transcripts;

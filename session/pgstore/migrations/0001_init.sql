-- Schema version 1 of the session store. Text keys use the "C" collation:
-- IDs are opaque and ordered byte-wise, whatever the database's locale.

-- One row per conversation: the record as JSON, plus the columns that the
-- queries and compare-and-set need.
CREATE TABLE switchboard_records (
    id        text COLLATE "C" PRIMARY KEY,
    partition text COLLATE "C" NOT NULL,
    customer  text COLLATE "C" NOT NULL,
    created   timestamptz NOT NULL,
    is_open   boolean NOT NULL,
    version   bigint NOT NULL,
    data      jsonb NOT NULL
);
CREATE INDEX switchboard_records_open ON switchboard_records (partition, id) WHERE is_open;
CREATE INDEX switchboard_records_open_id ON switchboard_records (id) WHERE is_open;
CREATE INDEX switchboard_records_customer ON switchboard_records (customer, created DESC, id DESC);

-- The audit trail: seq is 1, 2, 3… per conversation.
CREATE TABLE switchboard_audit (
    conv       text COLLATE "C" NOT NULL,
    seq        bigint NOT NULL,
    at         timestamptz NOT NULL,
    actor      text NOT NULL,
    reason     text NOT NULL,
    event      smallint NOT NULL,
    from_state smallint NOT NULL,
    to_state   smallint NOT NULL,
    agent      text NOT NULL,
    version    bigint NOT NULL,
    PRIMARY KEY (conv, seq)
);

-- The highest fencing token seen per partition. Tokens are unsigned 64-bit
-- integers stored with the top bit flipped (token # -9223372036854775808),
-- so that bigint order is their order.
CREATE TABLE switchboard_fences (
    partition text COLLATE "C" PRIMARY KEY,
    token     bigint NOT NULL
);

-- Per-conversation offset counter, updated in the transaction that inserts
-- the messages: offsets have no gaps.
CREATE TABLE switchboard_transcripts (
    conv        text COLLATE "C" PRIMARY KEY,
    last_offset bigint NOT NULL
);

CREATE TABLE switchboard_messages (
    conv        text COLLATE "C" NOT NULL,
    off         bigint NOT NULL,
    sender      text COLLATE "C" NOT NULL,
    sender_name text NOT NULL,
    sender_role text NOT NULL,
    client_id   text COLLATE "C" NOT NULL,
    body        text NOT NULL,
    at          timestamptz NOT NULL,
    traceparent text NOT NULL,
    tracestate  text NOT NULL,
    PRIMARY KEY (conv, off)
);
CREATE UNIQUE INDEX switchboard_messages_client_id ON switchboard_messages (conv, sender, client_id) WHERE client_id <> '';

CREATE TABLE switchboard_read_markers (
    conv        text COLLATE "C" NOT NULL,
    participant text COLLATE "C" NOT NULL,
    off         bigint NOT NULL,
    PRIMARY KEY (conv, participant)
);

-- Several instances on one store (docs/scale-out.md): who holds each
-- connection. A lease is held until expires_at, on the database's clock;
-- epoch grows at each change of hands.
CREATE TABLE leases (
    connection TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);

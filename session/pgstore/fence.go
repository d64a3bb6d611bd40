package pgstore

import (
	"context"
)

// nextFence raises the partition's highest fencing token by one (creating
// it at 1) and returns it; the row lock serialises concurrent callers.
const nextFence = `
INSERT INTO switchboard_fences (partition, token) VALUES ($1, $2)
ON CONFLICT (partition) DO UPDATE SET token = switchboard_fences.token + 1
RETURNING token`

// NextFence raises the partition's highest fencing token by one and returns
// it, committed: the token a new partition owner carries on its writes.
// Every write with a lower token then fails with session.ErrFenced.
func (s *Store) NextFence(ctx context.Context, partition string) (uint64, error) {
	if err := checkText("fence partition", partition); err != nil {
		return 0, err
	}
	var enc int64
	if err := s.pool.QueryRow(ctx, nextFence, partition, encodeToken(1)).Scan(&enc); err != nil {
		return 0, s.classify(ctx, "next fence", err)
	}
	return uint64(enc) ^ (1 << 63), nil
}

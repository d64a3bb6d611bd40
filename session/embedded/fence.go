package embedded

import (
	"context"

	bolt "go.etcd.io/bbolt"
)

// NextFence raises the partition's highest fencing token by one and returns
// it, durably: the token a new partition owner carries on its writes. Every
// write with a lower token then fails with session.ErrFenced.
func (s *Store) NextFence(ctx context.Context, partition string) (uint64, error) {
	if err := checkKey([]byte(partition)); err != nil {
		return 0, err
	}
	var next uint64
	err := s.write(ctx, "next fence", func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketFences)
		next = 1
		if v := b.Get([]byte(partition)); v != nil {
			next = u64(v) + 1
		}
		return put(b, []byte(partition), appendU64(nil, next))
	})
	if err != nil {
		return 0, err
	}
	return next, nil
}

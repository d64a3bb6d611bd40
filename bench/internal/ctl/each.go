package ctl

import (
	"context"
	"errors"
	"sync"
	"time"
)

// ForEach runs f for every child concurrently and returns their errors
// joined (nil when all succeed).
func ForEach(cs []*Child, f func(i int, c *Child) error) error {
	errs := make([]error, len(cs))
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(i, c)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Sleep waits for d or until ctx is done, returning ctx's error then.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

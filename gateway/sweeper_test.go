package gateway

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The sweeper goroutine ticks every Config.SweepInterval: each tick sets
// the coarse clock to the tick's time and evicts the handshake limiter's
// addresses whose bucket has refilled; stopSweeper ends the goroutine. In a
// synctest bubble the ticker runs on the bubble's clock, so the test
// neither sleeps for real nor needs a fake clock. (What a sweep does to
// connections needs real sockets: TestIdleReaping, TestPongKeepsAlive and
// TestWriteTimeout4001 run sweeps at times of their choosing.)
func TestSweeperTicks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg, err := Config{SweepInterval: time.Second, HandshakeRate: 1, HandshakeBurst: 2}.withDefaults()
		require.NoError(t, err)
		g := &Gateway{cfg: cfg, reg: newRegistry(), ips: newIPLimiter(cfg.HandshakeRate, cfg.HandshakeBurst, maxTrackedIPs)}
		start := time.Now()
		g.now.Store(start.UnixNano())
		g.startSweeper()

		ok, _ := g.ips.allow("192.0.2.1:1234", time.Now().UnixNano())
		require.True(t, ok)
		require.Equal(t, 1, g.ips.len())

		time.Sleep(cfg.SweepInterval - time.Millisecond)
		synctest.Wait()
		assert.Equal(t, start.UnixNano(), g.now.Load(), "a tick before SweepInterval")
		time.Sleep(time.Millisecond)
		synctest.Wait()
		assert.Equal(t, start.Add(time.Second).UnixNano(), g.now.Load(), "the coarse clock follows the ticks")
		assert.Equal(t, 1, g.ips.len(), "evicted before its bucket refilled (2s)")

		time.Sleep(time.Second)
		synctest.Wait()
		assert.Equal(t, start.Add(2*time.Second).UnixNano(), g.now.Load())
		assert.Zero(t, g.ips.len(), "an address whose bucket refilled is evicted")

		g.stopSweeper()
		time.Sleep(time.Hour)
		synctest.Wait()
		assert.Equal(t, start.Add(2*time.Second).UnixNano(), g.now.Load(), "a tick after stopSweeper")
	})
}

// TestRateLimitBucket checks the per-connection token bucket of the frame
// guard (Config.RateLimit) in a synctest bubble: the guard reads the time
// with time.Now, which the bubble's clock drives.
func TestRateLimitBucket(t *testing.T) {
	text := func(fg *frameGuard) verdict { return fg.frame(0x81, 0x80|1) }
	for _, tc := range []struct {
		name string
		rl   RateLimit
		run  func(t *testing.T, fg *frameGuard)
	}{
		{"burst then refill", RateLimit{PerSecond: 2, Burst: 3, Policy: RateDrop}, func(t *testing.T, fg *frameGuard) {
			for range 3 {
				assert.Equal(t, verdictPass, text(fg))
			}
			assert.Equal(t, verdictDropped, text(fg), "over the burst")
			time.Sleep(499 * time.Millisecond)
			fg.refill()
			assert.Equal(t, verdictDropped, text(fg), "a token before 1/PerSecond")
			time.Sleep(time.Millisecond)
			fg.refill()
			assert.Equal(t, verdictPass, text(fg), "a token every 1/PerSecond")
			assert.Equal(t, verdictDropped, text(fg))
			time.Sleep(time.Hour)
			fg.refill()
			for range 3 {
				assert.Equal(t, verdictPass, text(fg))
			}
			assert.Equal(t, verdictDropped, text(fg), "refilled past the burst")
		}},
		{"close policy", RateLimit{PerSecond: 1, Burst: 2}, func(t *testing.T, fg *frameGuard) {
			assert.Equal(t, verdictPass, text(fg))
			assert.Equal(t, verdictPass, fg.frame(0x89, 0x80)) // a ping takes a token too
			assert.Equal(t, verdictRefuse, text(fg))
			assert.Equal(t, ClosePolicyViolation, fg.refuseCode)
			time.Sleep(time.Hour)
			fg.refill()
			assert.Equal(t, verdictDrop, text(fg), "frames after the refusal are discarded")
		}},
		{"an admitted message borrows", RateLimit{PerSecond: 2, Burst: 2, Policy: RateDrop}, func(t *testing.T, fg *frameGuard) {
			assert.Equal(t, verdictPass, fg.frame(0x01, 0x80|1)) // text, not final
			assert.Equal(t, verdictPass, fg.frame(0x00, 0x80|1)) // continuation
			assert.Equal(t, verdictPass, fg.frame(0x80, 0x80|1)) // final continuation: borrowed
			assert.Equal(t, verdictDropped, text(fg), "the debt is repaid first")
			time.Sleep(500 * time.Millisecond)
			fg.refill()
			assert.Equal(t, verdictDropped, text(fg), "still repaying")
			time.Sleep(500 * time.Millisecond)
			fg.refill()
			assert.Equal(t, verdictPass, text(fg))
		}},
		{"pings over the limit are dropped", RateLimit{PerSecond: 1, Burst: 2, Policy: RateDrop}, func(t *testing.T, fg *frameGuard) {
			assert.Equal(t, verdictPass, fg.frame(0x89, 0x80))
			assert.Equal(t, verdictPass, fg.frame(0x8A, 0x80)) // pong
			assert.Equal(t, verdictDrop, fg.frame(0x89, 0x80))
			time.Sleep(time.Second)
			fg.refill()
			assert.Equal(t, verdictPass, fg.frame(0x89, 0x80))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cfg, err := Config{RateLimit: tc.rl}.withDefaults()
				require.NoError(t, err)
				fg := &frameGuard{g: &Gateway{cfg: cfg}}
				fg.refill() // the first read finds a full bucket
				tc.run(t, fg)
			})
		})
	}
}

// TestIPLimiterBucket checks the per-address handshake bucket
// (Config.HandshakeRate) on a synctest bubble's clock, as the gateway
// calls it (with time.Now).
func TestIPLimiterBucket(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newIPLimiter(0.5, 3, maxTrackedIPs)
		allow := func(addr string) (bool, int64) { return l.allow(addr, time.Now().UnixNano()) }
		for range 3 {
			ok, _ := allow("192.0.2.7:1000")
			require.True(t, ok)
		}
		ok, retry := allow("192.0.2.7:1001")
		assert.False(t, ok, "over the burst, whatever the port")
		assert.Equal(t, int64(2), retry, "one token every 2s")
		ok, _ = allow("192.0.2.8:1000")
		assert.True(t, ok, "another address has its own bucket")

		time.Sleep(1500 * time.Millisecond)
		ok, retry = allow("192.0.2.7:1000")
		assert.False(t, ok, "a refused handshake takes no token")
		assert.Equal(t, int64(1), retry)
		time.Sleep(500 * time.Millisecond)
		ok, _ = allow("192.0.2.7:1000")
		assert.True(t, ok, "a token 2s after the bucket emptied")
		ok, _ = allow("192.0.2.7:1000")
		assert.False(t, ok)

		// IPv6 clients are grouped by /64.
		for range 3 {
			ok, _ = allow("[2001:db8:1:2::1]:1000")
			require.True(t, ok)
		}
		ok, _ = allow("[2001:db8:1:2:ffff::9]:1000")
		assert.False(t, ok, "same /64")
		ok, _ = allow("[2001:db8:1:3::1]:1000")
		assert.True(t, ok, "another /64")

		time.Sleep(time.Hour)
		for range 3 {
			ok, _ = allow("192.0.2.7:1000")
			assert.True(t, ok)
		}
		ok, _ = allow("192.0.2.7:1000")
		assert.False(t, ok, "refilled past the burst")
	})
}

package fanoutbench

import (
	"bufio"
	"context"
	"encoding/binary"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-go/switchboard/fanout"
	"github.com/switchboard-go/switchboard/fanout/redisbroker"
)

// startRedis runs a throwaway redis-server on a free loopback port (the
// internal/redistest helper is not importable from this module).
func startRedis(b *testing.B) string {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		b.Skip("redis-server not on PATH")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	dir := b.TempDir()
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", addr); err == nil {
			_, _ = c.Write([]byte("PING\r\n"))
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if strings.HasPrefix(line, "+PONG") {
				return addr
			}
		}
		<-tick.C
	}
	b.Fatal("redis-server not ready")
	return ""
}

const rate = 10_000 // messages per second, paced

// paced calls send(i) for i in [0,n) at rate per second from a few
// goroutines (each send is a blocking round trip).
func paced(n int, send func(i int)) {
	const workers = 8
	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				if d := time.Until(start.Add(time.Duration(i) * time.Second / rate)); d > 0 {
					time.Sleep(d)
				}
				send(i)
			}
		}()
	}
	wg.Wait()
}

type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) { l.mu.Lock(); l.d = append(l.d, d); l.mu.Unlock() }
func (l *latencies) len() int            { l.mu.Lock(); defer l.mu.Unlock(); return len(l.d) }

func (l *latencies) report(b *testing.B) {
	l.mu.Lock()
	defer l.mu.Unlock()
	slices.Sort(l.d)
	q := func(p float64) float64 { return float64(l.d[int(p*float64(len(l.d)-1))].Microseconds()) }
	b.ReportMetric(q(0.50), "p50-µs")
	b.ReportMetric(q(0.99), "p99-µs")
}

func waitFor(b *testing.B, l *latencies, n int) {
	deadline := time.Now().Add(30 * time.Second)
	for l.len() < n {
		if time.Now().After(deadline) {
			b.Fatalf("received %d of %d", l.len(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// BenchmarkRedisNodeToNode: publish on node A, deliver on node B, paced at
// 10,000 msgs/s over loopback Redis. One op is one message; p50/p99 are the
// publish -> deliver latencies. Baseline: raw go-redis PUBLISH/SUBSCRIBE
// with no offsets, history or recovery.
func BenchmarkRedisNodeToNode(b *testing.B) {
	addr := startRedis(b)
	b.Run("impl=switchboard/redisbroker", func(b *testing.B) {
		mk := func() *fanout.Bus {
			br, err := redisbroker.New(redisbroker.Config{Addr: addr, Prefix: "bench" + strconv.Itoa(b.N)})
			if err != nil {
				b.Fatal(err)
			}
			bus, err := fanout.New(fanout.Config{Broker: br, History: fanout.HistoryOptions{Size: 1000}})
			if err != nil {
				b.Fatal(err)
			}
			return bus
		}
		a, bn := mk(), mk()
		defer a.Close()
		defer bn.Close()
		var l latencies
		_, err := bn.Subscribe(b.Context(), "room", fanout.SubscribeOptions{OnPublication: func(p fanout.Publication) {
			l.add(time.Since(p.Time))
		}})
		if err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		paced(b.N, func(int) {
			if _, err := a.Publish(b.Context(), "room", payload); err != nil {
				b.Error(err)
			}
		})
		waitFor(b, &l, b.N)
		b.StopTimer()
		l.report(b)
	})
	b.Run("impl=raw-go-redis-pubsub", func(b *testing.B) {
		pub := redis.NewClient(&redis.Options{Addr: addr})
		sub := redis.NewClient(&redis.Options{Addr: addr})
		defer pub.Close()
		defer sub.Close()
		ctx := context.Background()
		ps := sub.Subscribe(ctx, "raw-room")
		if _, err := ps.Receive(ctx); err != nil {
			b.Fatal(err)
		}
		var l latencies
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				msg, err := ps.ReceiveMessage(ctx)
				if err != nil {
					return
				}
				sent := int64(binary.LittleEndian.Uint64([]byte(msg.Payload[:8])))
				l.add(time.Since(time.Unix(0, sent)))
			}
		}()
		b.ResetTimer()
		paced(b.N, func(int) {
			msg := binary.LittleEndian.AppendUint64(make([]byte, 0, 8+len(payload)), uint64(time.Now().UnixNano()))
			if err := pub.Publish(ctx, "raw-room", append(msg, payload...)).Err(); err != nil {
				b.Error(err)
			}
		})
		waitFor(b, &l, b.N)
		b.StopTimer()
		_ = ps.Close()
		<-done
		l.report(b)
	})
}

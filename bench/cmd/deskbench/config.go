package main

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// config is everything the coordinator needs for one run.
type config struct {
	Self        string   // executable re-run for the load generators
	ChildEnv    []string // extra environment for the load generators (tests)
	Supportdesk string   // prebuilt supportdesk binary; "" builds one
	Wsbench     string   // prebuilt wsbench binary for the echo reference; "" builds one

	Setup      string // "single" or "cluster"
	Nodes      int    // supportdesk processes (cluster ≥ 3)
	ServerLog  string // supportdesk -log-level
	ServerArgs []string

	Customers    int
	Agents       int
	AgentCap     int
	AgentSkills  []string
	TierMix      [3]float64
	ConvRate     float64       // new conversations per second
	ConvDuration time.Duration // lifetime of a conversation after assignment
	Rate         float64       // chat messages per second, both directions together
	TypingFrac   float64
	MsgSize      int
	Waiting      int
	WaitingEntry string

	DrainTimeout time.Duration // finish: how long to wait for acknowledgements and live copies
	Warmup       time.Duration
	WarmupChat   bool // chat during the warm-up (false: conversations fill first, chat starts with the steady phase)
	Duration     time.Duration

	Sweep         bool
	SweepRates    []float64
	SweepStep     time.Duration
	SweepP99      time.Duration // the bar a step's P99 must stay under
	Isolation     bool
	IsolationDur  time.Duration
	FloodRate     float64
	FloodBurst    int
	FloodTyping   float64
	FloodSize     int
	Chaos         bool
	ChaosNode     int
	ChaosDown     time.Duration
	ChaosRestart  bool
	ChaosDuration time.Duration
	EchoRef       bool
	EchoDuration  time.Duration

	Clients            int
	ClientProcs        int
	Headroom           int
	SrcAddrs           int
	ConnectConcurrency int
	ConnectTimeout     time.Duration

	ProfileDir  string
	ProfileSecs int

	JSON   bool
	HTML   string
	Strict bool
}

// active is the steady-state number of conversations being chatted in:
// arrivals per second × lifetime.
func (c *config) active() float64 { return c.ConvRate * c.ConvDuration.Seconds() }

// pairRate is the messages per second each side of each active
// conversation sends so that the total is rate.
func (c *config) pairRate(rate float64) float64 {
	a := c.active()
	if a <= 0 {
		return 0
	}
	return rate / (2 * a)
}

// conns is the number of WebSocket connections of the run.
func (c *config) conns() int {
	n := c.Customers + c.Agents
	if c.Isolation {
		n++ // the flooding customer
	}
	return n
}

// PROTOCOL.md's limits the workload must respect: 10 messages/s per sender
// and conversation (burst 20), and 50 frames/s per connection (burst 100).
const (
	maxPairRate  = 9.0  // leave room under the 10/s per-sender limit
	maxConnRate  = 40.0 // leave room under the 50 frames/s per connection
	agentsMargin = 1.15 // agent slots over the steady active conversations
)

func (c *config) validate() error {
	switch c.Setup {
	case "single":
		if c.Nodes == 0 {
			c.Nodes = 1
		}
		if c.Nodes != 1 {
			return errors.New("-setup single runs one node (-nodes 1)")
		}
	case "cluster":
		if c.Nodes == 0 {
			c.Nodes = 3
		}
		if c.Nodes < 3 {
			return fmt.Errorf("-setup cluster needs at least 3 nodes, got %d", c.Nodes)
		}
	default:
		return fmt.Errorf("-setup must be single or cluster, got %q", c.Setup)
	}
	if c.Customers < 1 || c.Agents < 1 {
		return errors.New("-customers and -agents must be positive")
	}
	if c.AgentCap < 1 || c.AgentCap > 1000 {
		return fmt.Errorf("-agent-capacity must be 1..1000, got %d", c.AgentCap)
	}
	sum := c.TierMix[0] + c.TierMix[1] + c.TierMix[2]
	if math.Abs(sum-1) > 1e-6 || c.TierMix[0] < 0 || c.TierMix[1] < 0 || c.TierMix[2] < 0 {
		return fmt.Errorf("-tiers must be three non-negative shares summing to 1, got %v", c.TierMix)
	}
	if c.ConvRate <= 0 || c.ConvDuration <= 0 {
		return errors.New("-conv-rate and -conv-duration must be positive")
	}
	if c.MsgSize < tsDigits+1 || c.MsgSize > 8<<10 {
		return fmt.Errorf("-size must be %d..8192 (PROTOCOL.md: text at most 8 KiB), got %d", tsDigits+1, c.MsgSize)
	}
	if c.TypingFrac < 0 || c.TypingFrac > 1 {
		return fmt.Errorf("-typing must be 0..1, got %v", c.TypingFrac)
	}
	if c.Duration <= 0 {
		return errors.New("-duration must be positive")
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 2 * time.Minute
	}
	if c.ConnectConcurrency < 1 {
		return errors.New("-connect-concurrency must be positive")
	}
	slots := float64(c.Agents * c.AgentCap)
	if need := c.active()*agentsMargin + 1; slots < need {
		return fmt.Errorf("%d agents × capacity %d = %.0f slots < %.0f needed for %.0f conversations/s × %s (+%.0f%%): conversations would queue; add agents or capacity",
			c.Agents, c.AgentCap, slots, need, c.ConvRate, c.ConvDuration, (agentsMargin-1)*100)
	}
	if c.Waiting > c.Customers/2 {
		return fmt.Errorf("-waiting %d: at most half the customers may be parked in the queue", c.Waiting)
	}
	if c.Waiting > 10_000 {
		return errors.New("-waiting: a tier's waiting room holds 10,000 (supportdesk -waiting-room)")
	}
	if float64(c.Customers-c.Waiting) < 2*c.active() {
		return fmt.Errorf("%d customers (minus %d waiting) cannot sustain %.0f active conversations with idle ones to spare: add customers",
			c.Customers, c.Waiting, c.active())
	}
	rates := append([]float64{c.Rate}, c.SweepRates...)
	for _, r := range rates {
		pr := c.pairRate(r)
		if pr > maxPairRate {
			return fmt.Errorf("rate %.0f msgs/s over %.0f active conversations is %.1f msgs/s per side: over PROTOCOL.md's 10/s per sender and conversation (keep ≤ %.0f); raise -conv-rate or -conv-duration",
				r, c.active(), pr, maxPairRate)
		}
		if fr := pr * float64(c.AgentCap) * (1 + c.TypingFrac); fr > maxConnRate {
			return fmt.Errorf("rate %.0f msgs/s: an agent with %d conversations sends %.1f frames/s, over PROTOCOL.md's 50 frames/s per connection (keep ≤ %.0f); lower -agent-capacity or -typing, or add conversations",
				r, c.AgentCap, fr, maxConnRate)
		}
	}
	if c.Sweep && len(c.SweepRates) == 0 {
		return errors.New("-sweep needs -sweep-rates")
	}
	if c.Chaos && (c.ChaosNode < 0 || c.ChaosNode >= c.Nodes) {
		return fmt.Errorf("-chaos-node %d: there are %d nodes", c.ChaosNode, c.Nodes)
	}
	if c.Chaos && c.Setup == "single" && !c.ChaosRestart {
		return errors.New("-chaos on a single node needs -chaos-restart: its clients have nowhere else to go")
	}
	if c.Isolation && (c.FloodRate > 10 || c.FloodBurst > 20) {
		return errors.New("-flood-rate and -flood-burst stay within PROTOCOL.md's 10 msgs/s, burst 20")
	}
	return nil
}

// parseRates reads "2000,4000,8000" or "2000:16000:2000" (from:to:step).
func parseRates(s string) ([]float64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	if f := strings.Split(s, ":"); len(f) == 3 {
		from, e1 := strconv.ParseFloat(f[0], 64)
		to, e2 := strconv.ParseFloat(f[1], 64)
		step, e3 := strconv.ParseFloat(f[2], 64)
		if e1 != nil || e2 != nil || e3 != nil || step <= 0 || from <= 0 || to < from {
			return nil, fmt.Errorf("-sweep-rates %q: want from:to:step", s)
		}
		var out []float64
		for r := from; r <= to+1e-9; r += step {
			out = append(out, r)
		}
		return out, nil
	}
	var out []float64
	for _, f := range strings.Split(s, ",") {
		r, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || r <= 0 {
			return nil, fmt.Errorf("-sweep-rates %q: %q is not a positive rate", s, f)
		}
		out = append(out, r)
	}
	return out, nil
}

// parseMix reads "10,30,60" (percent or shares) into shares summing to 1.
func parseMix(s string) ([3]float64, error) {
	var m [3]float64
	f := strings.Split(s, ",")
	if len(f) != 3 {
		return m, fmt.Errorf("-tiers %q: want vip,premium,standard shares", s)
	}
	sum := 0.0
	for i, x := range f {
		v, err := strconv.ParseFloat(strings.TrimSpace(x), 64)
		if err != nil || v < 0 {
			return m, fmt.Errorf("-tiers %q: %q is not a share", s, x)
		}
		m[i] = v
		sum += v
	}
	if sum <= 0 {
		return m, fmt.Errorf("-tiers %q: shares sum to 0", s)
	}
	for i := range m {
		m[i] /= sum
	}
	return m, nil
}

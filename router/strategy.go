package router

import "sync"

// Strategy orders eligible agents; the Assigner hands a conversation to the
// minimum under Less among the agents that are online, have free capacity,
// match the request's skills and team, and are not excluded.
//
// The Assigner keeps eligible agents in heaps ordered by Less, so an
// assignment costs O(log n) rather than a scan. Less must therefore be a
// strict weak order that depends only on the AgentLoad fields (which change
// only through the Assigner), and must be cheap and non-blocking: it runs
// with the Assigner's lock held and must not call back into the Assigner.
type Strategy interface {
	// Name labels the strategy in metrics ("least_loaded", ...).
	Name() string
	// Less reports whether agent a should be picked before agent b.
	Less(a, b *AgentLoad) bool
}

// Preferrer is an optional interface for a Strategy that names one agent to
// try before the ordered pool (Sticky is the built-in one). Its methods run
// with the Assigner's lock held and must not call back into the Assigner.
type Preferrer interface {
	Strategy
	// PreferredAgent returns the agent to try first for req, or "" for none.
	// The agent is used only if it is online with free capacity, has the
	// required skills and team, and is not excluded.
	PreferredAgent(req Request) string
	// Assigned tells the strategy that customerID's conversation is now
	// held by agentID (on every assignment, accepted offer, transfer and
	// release of a conversation whose CustomerID is known).
	Assigned(customerID, agentID string)
}

type assignLeastLoaded struct{}

// LeastLoaded returns the strategy that picks the agent with the fewest
// active plus offered conversations; ties go to the agent who has waited
// longest since their last assignment, then to the earliest-added agent.
// (Intercom "balanced", Zendesk's default, Rocket.Chat load balancing.)
func LeastLoaded() Strategy { return assignLeastLoaded{} }

func (assignLeastLoaded) Name() string { return "least_loaded" }

func (assignLeastLoaded) Less(a, b *AgentLoad) bool {
	la, lb := a.Active+a.Reserved, b.Active+b.Reserved
	if la != lb {
		return la < lb
	}
	if a.AssignSeq != b.AssignSeq {
		return a.AssignSeq < b.AssignSeq
	}
	return a.JoinSeq < b.JoinSeq
}

type assignRoundRobin struct{}

// RoundRobin returns the strategy that gives agents turns in rotation,
// whatever their load: the eligible agent whose last automatic pick is
// oldest goes next; new agents join the end of the rotation. Manual
// assignments and transfers do not move the rotation. (Chatwoot v1,
// Rocket.Chat auto selection.)
func RoundRobin() Strategy { return assignRoundRobin{} }

func (assignRoundRobin) Name() string { return "round_robin" }

func (assignRoundRobin) Less(a, b *AgentLoad) bool {
	if a.TurnSeq != b.TurnSeq {
		return a.TurnSeq < b.TurnSeq
	}
	return a.JoinSeq < b.JoinSeq
}

type assignLoadRotation struct{}

// LoadRotation returns the strategy that picks the eligible agent whose last
// assignment of any kind (automatic, offer, manual, transfer) is oldest;
// agents never assigned come first, in the order they were added.
// (Rocket.Chat load rotation.)
func LoadRotation() Strategy { return assignLoadRotation{} }

func (assignLoadRotation) Name() string { return "load_rotation" }

func (assignLoadRotation) Less(a, b *AgentLoad) bool {
	if a.AssignSeq != b.AssignSeq {
		return a.AssignSeq < b.AssignSeq
	}
	return a.JoinSeq < b.JoinSeq
}

// StickyConfig configures Sticky.
type StickyConfig struct {
	// Fallback orders the pool when the customer's last agent cannot take
	// the conversation. Default LeastLoaded().
	Fallback Strategy
	// MaxCustomers bounds the in-memory customer → last agent table; the
	// oldest entries are forgotten first. Default 100,000.
	MaxCustomers int
	// Lookup, when set, is asked first for the customer's last agent (for
	// example from the host's database); the in-memory table is used when
	// it returns false. It runs with the Assigner's lock held: keep it fast
	// and never call the Assigner from it.
	Lookup func(customerID string) (agentID string, ok bool)
}

// DefaultStickyMaxCustomers is StickyConfig.MaxCustomers' default.
const DefaultStickyMaxCustomers = 100_000

// Sticky returns a strategy that sends a returning customer (Request.CustomerID)
// to the agent they last talked to, if that agent is online with free
// capacity, has the required skills and team, and is not excluded;
// otherwise cfg.Fallback orders the pool. The returned value is safe for
// concurrent use but should serve one Assigner: its memory is that
// Assigner's history.
func Sticky(cfg StickyConfig) Strategy {
	if cfg.Fallback == nil {
		cfg.Fallback = LeastLoaded()
	}
	if cfg.MaxCustomers <= 0 {
		cfg.MaxCustomers = DefaultStickyMaxCustomers
	}
	return &assignSticky{
		fallback: cfg.Fallback,
		lookup:   cfg.Lookup,
		max:      cfg.MaxCustomers,
		last:     make(map[string]string),
	}
}

// assignSticky remembers customer → agent in a map bounded by a FIFO ring
// of customer IDs: inserting a new customer into a full table forgets the
// customer inserted longest ago. No allocation after warm-up.
type assignSticky struct {
	fallback Strategy
	lookup   func(string) (string, bool)
	max      int

	mu   sync.Mutex
	last map[string]string
	ring []string
	next int
}

func (s *assignSticky) Name() string              { return "sticky" }
func (s *assignSticky) Less(a, b *AgentLoad) bool { return s.fallback.Less(a, b) }

// fallbackName is the metric label used when the fallback ordered the pool.
func (s *assignSticky) fallbackName() string { return s.fallback.Name() }

func (s *assignSticky) PreferredAgent(req Request) string {
	if req.CustomerID == "" {
		return ""
	}
	if s.lookup != nil {
		if id, ok := s.lookup(req.CustomerID); ok {
			return id
		}
	}
	s.mu.Lock()
	id := s.last[req.CustomerID]
	s.mu.Unlock()
	return id
}

func (s *assignSticky) Assigned(customerID, agentID string) {
	if customerID == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.last[customerID]; !ok {
		if len(s.ring) < s.max {
			s.ring = append(s.ring, customerID)
		} else {
			delete(s.last, s.ring[s.next])
			s.ring[s.next] = customerID
			s.next = (s.next + 1) % s.max
		}
	}
	s.last[customerID] = agentID
}

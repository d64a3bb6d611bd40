package router

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// Presence is an agent's availability for new work.
type Presence uint8

const (
	// Offline agents get nothing new; after the optional grace period their
	// conversations are handed back to the host (Config.OnAgentOffline).
	Offline Presence = iota
	// Online agents receive new conversations up to their capacity.
	Online
	// Busy agents keep their current conversations but get nothing new.
	Busy
	// Away agents keep their current conversations but get nothing new
	// (typically set by an idle timeout or after missed offers).
	Away
)

var agentPresenceNames = [...]string{Offline: "offline", Online: "online", Busy: "busy", Away: "away"}

// String returns "offline", "online", "busy" or "away".
func (p Presence) String() string {
	if int(p) < len(agentPresenceNames) {
		return agentPresenceNames[p]
	}
	return fmt.Sprintf("presence(%d)", uint8(p))
}

// Valid reports whether p is one of the four defined presences.
func (p Presence) Valid() bool { return int(p) < len(agentPresenceNames) }

// Agent describes an agent as the host configures it. Skills and Teams are
// copied by UpsertAgent; duplicates and empty strings are ignored.
type Agent struct {
	// ID identifies the agent; it must not be empty.
	ID string
	// Presence is the agent's availability; the zero value is Offline.
	Presence Presence
	// Capacity is the maximum number of concurrent conversations (active
	// plus offered). 0 means unlimited; negative is invalid.
	Capacity int
	// Skills the agent has; a Request's required skills must all be here.
	Skills []string
	// Teams the agent belongs to; a Request naming a Team only goes to
	// members of that team.
	Teams []string
}

// AgentLoad is the part of an agent's state that strategies order by. It is
// maintained by the Assigner and changes only through Assigner calls, so a
// Strategy's Less over these fields gives a stable order that the Assigner
// can keep indexed.
type AgentLoad struct {
	// ID is the agent's ID (useful as a final tie-breaker).
	ID string
	// Active is the number of conversations the agent holds.
	Active int
	// Reserved is the number of pending offers to the agent.
	Reserved int
	// Capacity is the configured capacity (0 = unlimited).
	Capacity int
	// LastAssigned is when the agent last received a conversation (by any
	// route: automatic, offer, manual or transfer); zero if never.
	LastAssigned time.Time
	// AssignSeq orders LastAssigned without ties: it is the value of a
	// counter incremented on every assignment, 0 if never assigned.
	AssignSeq uint64
	// TurnSeq is the counter value of the agent's last automatic pick by the
	// strategy's ordering (round-robin turn); agents start with the value
	// current when they were added, so newcomers join the end of the rotation.
	TurnSeq uint64
	// JoinSeq orders agents by when they were first added.
	JoinSeq uint64
	// ConsecutiveMisses counts offers that expired unanswered since the
	// agent last accepted one.
	ConsecutiveMisses int
}

// Load returns Active + Reserved: the slots counted against capacity.
func (l *AgentLoad) Load() int { return l.Active + l.Reserved }

// AgentInfo is a point-in-time snapshot of an agent, returned by
// Assigner.Agent and Assigner.Agents. It is a copy; changing it changes nothing.
type AgentInfo struct {
	Agent
	// Active, Reserved, LastAssigned and the sequences as in AgentLoad.
	Active       int
	Reserved     int
	LastAssigned time.Time
	// MissedOffers counts every offer to this agent that expired unanswered;
	// ConsecutiveMisses resets when the agent accepts an offer.
	MissedOffers      int
	ConsecutiveMisses int
	// DeclinedOffers counts offers this agent declined.
	DeclinedOffers int
	// Conversations holds the IDs of the active conversations, sorted.
	Conversations []string
	// OfflineSince is when the agent went offline (zero unless Offline).
	OfflineSince time.Time
}

// Free returns the number of further conversations the agent could take
// (ignoring presence), or -1 when its capacity is unlimited.
func (i AgentInfo) Free() int {
	if i.Capacity == 0 {
		return -1
	}
	return max(0, i.Capacity-i.Active-i.Reserved)
}

// agentState is the Assigner's internal record of one agent. Every field is
// guarded by Assigner.mu.
type agentState struct {
	load     AgentLoad
	presence Presence
	skills   []string // sorted, deduplicated
	teams    []string // sorted, deduplicated
	convs    map[string]struct{}
	offers   []*assignOffer
	members  []*assignMember // views this agent matches

	missedTotal  int
	declined     int
	offlineSince time.Time
	graceTimer   *time.Timer
	graceEpoch   uint64
}

// available reports whether the agent can take a new conversation now.
func (g *agentState) available() bool {
	return g.presence == Online && (g.load.Capacity == 0 || g.load.Active+g.load.Reserved < g.load.Capacity)
}

// assignable is the number of slots open to automatic assignment:
// 0 unless online, math.MaxInt when unlimited.
func (g *agentState) assignable() int {
	if g.presence != Online {
		return 0
	}
	if g.load.Capacity == 0 {
		return math.MaxInt
	}
	return max(0, g.load.Capacity-g.load.Active-g.load.Reserved)
}

// free is like AgentInfo.Free.
func (g *agentState) free() int {
	if g.load.Capacity == 0 {
		return -1
	}
	return max(0, g.load.Capacity-g.load.Active-g.load.Reserved)
}

func (g *agentState) hasAll(sorted []string) bool {
	for _, s := range sorted {
		if _, ok := slices.BinarySearch(g.skills, s); !ok {
			return false
		}
	}
	return true
}

func (g *agentState) hasSkills(skills []string) bool {
	for _, s := range skills {
		if s == "" {
			continue
		}
		if _, ok := slices.BinarySearch(g.skills, s); !ok {
			return false
		}
	}
	return true
}

func (g *agentState) inTeam(team string) bool {
	if team == "" {
		return true
	}
	_, ok := slices.BinarySearch(g.teams, team)
	return ok
}

func (g *agentState) info() AgentInfo {
	inf := AgentInfo{
		Agent: Agent{
			ID:       g.load.ID,
			Presence: g.presence,
			Capacity: g.load.Capacity,
			Skills:   slices.Clone(g.skills),
			Teams:    slices.Clone(g.teams),
		},
		Active:            g.load.Active,
		Reserved:          g.load.Reserved,
		LastAssigned:      g.load.LastAssigned,
		MissedOffers:      g.missedTotal,
		ConsecutiveMisses: g.load.ConsecutiveMisses,
		DeclinedOffers:    g.declined,
		Conversations:     make([]string, 0, len(g.convs)),
		OfflineSince:      g.offlineSince,
	}
	for c := range g.convs {
		inf.Conversations = append(inf.Conversations, c)
	}
	slices.Sort(inf.Conversations)
	return inf
}

func (g *agentState) removeOffer(o *assignOffer) {
	for i, x := range g.offers {
		if x == o {
			last := len(g.offers) - 1
			g.offers[i] = g.offers[last]
			g.offers[last] = nil
			g.offers = g.offers[:last]
			return
		}
	}
}

// agentNormalize returns a sorted, deduplicated copy of in without empty strings.
func agentNormalize(in []string) []string {
	out := make([]string, 0, len(in))
	for _, s := range in {
		if s != "" {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func agentValidate(ag Agent) error {
	switch {
	case ag.ID == "":
		return fmt.Errorf("%w: empty ID", ErrInvalidAgent)
	case ag.Capacity < 0:
		return fmt.Errorf("%w: %q: negative Capacity %d", ErrInvalidAgent, ag.ID, ag.Capacity)
	case !ag.Presence.Valid():
		return fmt.Errorf("%w: %q: invalid Presence %d", ErrInvalidAgent, ag.ID, ag.Presence)
	}
	return nil
}

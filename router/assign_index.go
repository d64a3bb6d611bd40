package router

import (
	"hash/maphash"
	"slices"
)

// The eligibility index. Agents are grouped into views, one per distinct
// (required skill set, team) that requests have asked for; the root view
// (no skills, no team) holds every agent. Each view keeps a binary heap,
// ordered by the strategy's Less, of its member agents that are available
// (online with free capacity). Picking an agent for a request is a hash
// lookup of its view plus a look at the heap's top: O(1) for the pick and
// O(v·log n) to re-order the picked agent in the v views it belongs to.
// Views are created lazily on first use (one O(n) scan) and the least
// recently used ones are dropped beyond AssignerConfig.MaxSkillViews.

type assignView struct {
	skills  []string // sorted, deduplicated
	team    string
	hash    uint64
	heap    []*assignMember
	lastUse uint64
}

// assignMember links one agent to one view it matches; idx is its position
// in the view's heap or -1 when the agent is not available.
type assignMember struct {
	load  *AgentLoad // &agent.load, one pointer hop less per heap comparison
	view  *assignView
	agent *agentState
	idx   int
}

type assignIndex struct {
	seed    maphash.Seed
	strat   Strategy
	views   map[uint64][]*assignView
	root    *assignView
	nviews  int
	max     int
	tick    uint64
	created uint64 // views created (for tests/metrics)
}

func newAssignIndex(strat Strategy, maxViews int) *assignIndex {
	ix := &assignIndex{seed: maphash.MakeSeed(), strat: strat, views: map[uint64][]*assignView{}, max: maxViews}
	ix.root = &assignView{hash: ix.hashKey(nil, "")}
	ix.views[ix.root.hash] = []*assignView{ix.root}
	ix.nviews = 1
	return ix
}

func (ix *assignIndex) hashKey(skills []string, team string) uint64 {
	h := maphash.String(ix.seed, team)
	for _, s := range skills {
		h = h*0x9E3779B97F4A7C15 ^ maphash.String(ix.seed, s)
	}
	return h
}

func (v *assignView) matches(g *agentState) bool {
	return g.inTeam(v.team) && g.hasAll(v.skills)
}

// view returns the view for the canonical (sorted, deduplicated) skills and
// team, creating it from agents if needed. skills may be a scratch buffer:
// it is copied when a view is created.
func (ix *assignIndex) view(skills []string, team string, agents map[string]*agentState) *assignView {
	ix.tick++
	if len(skills) == 0 && team == "" {
		return ix.root
	}
	h := ix.hashKey(skills, team)
	for _, v := range ix.views[h] {
		if v.team == team && slices.Equal(v.skills, skills) {
			v.lastUse = ix.tick
			return v
		}
	}
	v := &assignView{skills: slices.Clone(skills), team: team, hash: h, lastUse: ix.tick}
	ix.views[h] = append(ix.views[h], v)
	ix.nviews++
	ix.created++
	for _, g := range agents {
		if v.matches(g) {
			m := &assignMember{load: &g.load, view: v, agent: g, idx: -1}
			g.members = append(g.members, m)
			if g.available() {
				ix.push(v, m)
			}
		}
	}
	if ix.max > 0 && ix.nviews > ix.max {
		ix.evict(v, agents)
	}
	return v
}

// evict drops the least recently used view other than root and keep.
func (ix *assignIndex) evict(keep *assignView, agents map[string]*agentState) {
	var victim *assignView
	for _, chain := range ix.views {
		for _, v := range chain {
			if v != ix.root && v != keep && (victim == nil || v.lastUse < victim.lastUse) {
				victim = v
			}
		}
	}
	if victim == nil {
		return
	}
	chain := ix.views[victim.hash]
	chain = slices.DeleteFunc(chain, func(v *assignView) bool { return v == victim })
	if len(chain) == 0 {
		delete(ix.views, victim.hash)
	} else {
		ix.views[victim.hash] = chain
	}
	ix.nviews--
	for _, g := range agents {
		g.members = slices.DeleteFunc(g.members, func(m *assignMember) bool { return m.view == victim })
	}
	victim.heap = nil
}

// addAgent links a new agent into every view it matches.
func (ix *assignIndex) addAgent(g *agentState) {
	for _, chain := range ix.views {
		for _, v := range chain {
			if v.matches(g) {
				g.members = append(g.members, &assignMember{load: &g.load, view: v, agent: g, idx: -1})
			}
		}
	}
	ix.update(g)
}

// removeAgent unlinks g from every view.
func (ix *assignIndex) removeAgent(g *agentState) {
	for _, m := range g.members {
		if m.idx >= 0 {
			ix.remove(m.view, m.idx)
		}
	}
	g.members = g.members[:0]
}

// relink recomputes g's views after its skills or teams changed.
func (ix *assignIndex) relink(g *agentState) {
	ix.removeAgent(g)
	ix.addAgent(g)
}

// update puts g into, moves it within, or takes it out of its views' heaps
// according to its availability and load. Call after every change to g.
func (ix *assignIndex) update(g *agentState) {
	avail := g.available()
	for _, m := range g.members {
		switch {
		case avail && m.idx < 0:
			ix.push(m.view, m)
		case avail:
			ix.fix(m.view, m.idx)
		case m.idx >= 0:
			ix.remove(m.view, m.idx)
		}
	}
}

func (ix *assignIndex) less(h []*assignMember, i, j int) bool {
	return ix.strat.Less(h[i].load, h[j].load)
}

func (ix *assignIndex) swap(h []*assignMember, i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx = i
	h[j].idx = j
}

func (ix *assignIndex) up(h []*assignMember, j int) {
	for j > 0 {
		i := (j - 1) / 2
		if !ix.less(h, j, i) {
			break
		}
		ix.swap(h, i, j)
		j = i
	}
}

func (ix *assignIndex) down(h []*assignMember, i0 int) bool {
	i, n := i0, len(h)
	for {
		j1 := 2*i + 1
		if j1 >= n {
			break
		}
		j := j1
		if j2 := j1 + 1; j2 < n && ix.less(h, j2, j1) {
			j = j2
		}
		if !ix.less(h, j, i) {
			break
		}
		ix.swap(h, i, j)
		i = j
	}
	return i > i0
}

func (ix *assignIndex) push(v *assignView, m *assignMember) {
	m.idx = len(v.heap)
	v.heap = append(v.heap, m)
	ix.up(v.heap, m.idx)
}

func (ix *assignIndex) remove(v *assignView, i int) {
	h := v.heap
	n := len(h) - 1
	m := h[i]
	if n != i {
		ix.swap(h, i, n)
		if !ix.down(h[:n], i) {
			ix.up(h[:n], i)
		}
	}
	h[n] = nil
	v.heap = h[:n]
	m.idx = -1
}

func (ix *assignIndex) fix(v *assignView, i int) {
	if !ix.down(v.heap, i) {
		ix.up(v.heap, i)
	}
}

// best returns the first agent of v in strategy order whose ID is not in
// exclude, or nil. Without exclusions it is the heap's top; otherwise a
// best-first walk of the heap visits only the excluded agents that rank
// ahead of the answer and their children.
func (ix *assignIndex) best(v *assignView, exclude []string) *agentState {
	h := v.heap
	if len(h) == 0 {
		return nil
	}
	if len(exclude) == 0 || !slices.Contains(exclude, h[0].agent.load.ID) {
		return h[0].agent
	}
	// frontier is a min-heap of heap indexes, ordered like h.
	var buf [32]int
	fr := buf[:0]
	push := func(i int) {
		if i >= len(h) {
			return
		}
		fr = append(fr, i)
		for j := len(fr) - 1; j > 0; {
			p := (j - 1) / 2
			if !ix.less(h, fr[j], fr[p]) {
				break
			}
			fr[j], fr[p] = fr[p], fr[j]
			j = p
		}
	}
	pop := func() int {
		top := fr[0]
		n := len(fr) - 1
		fr[0] = fr[n]
		fr = fr[:n]
		for i := 0; ; {
			j := 2*i + 1
			if j >= n {
				break
			}
			if j+1 < n && ix.less(h, fr[j+1], fr[j]) {
				j++
			}
			if !ix.less(h, fr[j], fr[i]) {
				break
			}
			fr[i], fr[j] = fr[j], fr[i]
			i = j
		}
		return top
	}
	push(1)
	push(2)
	for len(fr) > 0 {
		i := pop()
		if !slices.Contains(exclude, h[i].agent.load.ID) {
			return h[i].agent
		}
		push(2*i + 1)
		push(2*i + 2)
	}
	return nil
}

package routerbench

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/switchboard-go/switchboard/router"
)

// No Go library among the bench module's peers does agent assignment, so
// router.Assigner is compared with the approach support platforms take per
// assignment (Chatwoot's and Rocket.Chat's: load the online agents, filter by
// skills and capacity, keep the least loaded): a mutex-guarded linear scan
// over every agent. Both pick the same agent under the same rules (least
// loaded, ties to the oldest last assignment); the point is the scaling in
// the number of agents.

type scanAgent struct {
	id       string
	skills   map[string]bool
	capacity int
	active   int
	lastSeq  uint64
	online   bool
}

type scanAssigner struct {
	mu     sync.Mutex
	agents []*scanAgent
	convs  map[string]*scanAgent
	seq    uint64
}

func (s *scanAssigner) assign(conv string, skills []string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var best *scanAgent
	for _, a := range s.agents {
		if !a.online || (a.capacity > 0 && a.active >= a.capacity) {
			continue
		}
		ok := true
		for _, sk := range skills {
			if !a.skills[sk] {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		if best == nil || a.active < best.active || (a.active == best.active && a.lastSeq < best.lastSeq) {
			best = a
		}
	}
	if best == nil {
		return "", false
	}
	s.seq++
	best.active++
	best.lastSeq = s.seq
	s.convs[conv] = best
	return best.id, true
}

func (s *scanAssigner) release(conv string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.convs[conv]; a != nil {
		a.active--
		delete(s.convs, conv)
	}
}

var benchSkills = []string{"en", "de", "fr", "es", "billing", "tech", "sales", "vip"}

func agentSkills(rng *rand.Rand) []string {
	p := rng.Perm(len(benchSkills))
	return []string{benchSkills[p[0]], benchSkills[p[1]], benchSkills[p[2]]}
}

// BenchmarkAssign runs Assign+Release (steady state) on both contenders with
// 100, 1,000 and 10,000 online agents of capacity 8, 3 random skills each,
// about 3 conversations each, and requests requiring none or one skill.
func BenchmarkAssign(b *testing.B) {
	ids := make([]string, 1024)
	for i := range ids {
		ids[i] = fmt.Sprintf("conv-%d", i)
	}
	for _, skilled := range []bool{false, true} {
		for _, n := range []int{100, 1000, 10000} {
			req := func(i int) []string {
				if skilled {
					return benchSkills[i%4 : i%4+1]
				}
				return nil
			}
			name := fmt.Sprintf("skills=%v/agents=%d", map[bool]int{false: 0, true: 1}[skilled], n)
			b.Run("switchboard/"+name, func(b *testing.B) {
				a, err := router.NewAssigner(router.AssignerConfig{})
				if err != nil {
					b.Fatal(err)
				}
				defer a.Close()
				rng := rand.New(rand.NewPCG(uint64(n), 1))
				for i := range n {
					if err := a.UpsertAgent(router.Agent{ID: fmt.Sprintf("agent-%05d", i), Presence: router.Online,
						Capacity: 8, Skills: agentSkills(rng)}); err != nil {
						b.Fatal(err)
					}
				}
				for i := range 3 * n {
					if _, err := a.Assign(router.Request{ConversationID: fmt.Sprint("pre-", i)}); err != nil {
						b.Fatal(err)
					}
				}
				reqs := make([]router.Request, len(ids))
				for i := range reqs {
					reqs[i] = router.Request{ConversationID: ids[i], RequiredSkills: req(i)}
				}
				b.ReportAllocs()
				for i := 0; b.Loop(); i++ {
					r := &reqs[i&1023]
					if _, err := a.Assign(*r); err != nil {
						b.Fatal(err)
					}
					if err := a.Release(r.ConversationID); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("scan/"+name, func(b *testing.B) {
				s := &scanAssigner{convs: map[string]*scanAgent{}}
				rng := rand.New(rand.NewPCG(uint64(n), 1))
				for i := range n {
					sk := map[string]bool{}
					for _, x := range agentSkills(rng) {
						sk[x] = true
					}
					s.agents = append(s.agents, &scanAgent{id: fmt.Sprintf("agent-%05d", i), skills: sk, capacity: 8, online: true})
				}
				for i := range 3 * n {
					if _, ok := s.assign(fmt.Sprint("pre-", i), nil); !ok {
						b.Fatal("no agent")
					}
				}
				reqs := make([][]string, len(ids))
				for i := range reqs {
					reqs[i] = slices.Clone(req(i))
				}
				b.ReportAllocs()
				for i := 0; b.Loop(); i++ {
					if _, ok := s.assign(ids[i&1023], reqs[i&1023]); !ok {
						b.Fatal("no agent")
					}
					s.release(ids[i&1023])
				}
			})
		}
	}
}

package session

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestShardIndexModel drives one shard's open-addressing index and LRU list
// with random inserts, lookups and removals under a deliberately poor hash
// (long probe runs, wrap-around, growth) and checks it against a Go map.
func TestShardIndexModel(t *testing.T) {
	for _, limit := range []int{0, 37} {
		var sh shard[int, int]
		sh.init(limit, 4)
		model := map[int]int{}
		hash := func(k int) uint64 { return uint64(k%11) * 0x9e3779b9 } // 11 distinct hashes
		r := rand.New(rand.NewPCG(7, uint64(limit)))
		for op := range 20_000 {
			k := r.IntN(120)
			h := hash(k)
			i, ok := sh.find(h, k)
			_, want := model[k]
			require.Equal(t, want, ok, "op %d key %d", op, k)
			switch {
			case ok && r.IntN(3) == 0:
				sh.remove(i)
				delete(model, k)
			case ok:
				require.Equal(t, model[k], sh.ents[i].value)
				sh.moveToFront(i)
			default:
				ev := sh.insert(h, k, op, 0, 0)
				if ev.ok {
					_, had := model[ev.key]
					require.True(t, had)
					delete(model, ev.key)
				}
				model[k] = op
			}
			require.Equal(t, len(model), sh.n)
			if limit > 0 {
				require.LessOrEqual(t, sh.n, limit)
			}
		}
		// The LRU list holds exactly the live entries.
		n := 0
		for j := sh.links[0].next; j != 0; j = sh.links[j].next {
			_, ok := model[sh.ents[j].key]
			require.True(t, ok)
			n++
		}
		require.Equal(t, len(model), n)
	}
}

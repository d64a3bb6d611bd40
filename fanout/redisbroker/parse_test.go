package redisbroker

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseMessages(t *testing.T) {
	p, ok := parsePublication("12:1700000000000000000:3:abc" + lenPrefixed("conv:1") + "payload:with:colons")
	require.True(t, ok)
	assert.Equal(t, uint64(12), p.Offset)
	assert.Equal(t, "abc", p.Epoch)
	assert.Equal(t, "conv:1", p.Topic)
	assert.Equal(t, "payload:with:colons", string(p.Payload))
	assert.Equal(t, int64(1700000000000000000), p.Time.UnixNano())

	ev, ok := parsePresence(lenPrefixed("t") + lenPrefixed("agent") + "info")
	require.True(t, ok)
	assert.Equal(t, "t", ev.Topic)
	assert.Equal(t, "agent", ev.Member.ID)
	assert.Equal(t, "info", string(ev.Member.Info))

	for _, bad := range []string{"", "x", "1:2", "1:2:9:ab", "1:2:0:0:", "a:2:0:1:t", "1:2:0:99:t"} {
		_, ok := parsePublication(bad)
		assert.False(t, ok, bad)
	}
	for _, bad := range []string{"", "0:", "1:t0:", "5:t"} {
		_, ok := parsePresence(bad)
		assert.False(t, ok, bad)
	}
}

// FuzzParse feeds arbitrary pub/sub payloads (another process may publish
// on the shard channels) to the decoders: they must never panic, and a
// decoded publication must re-encode to the same message.
func FuzzParse(f *testing.F) {
	f.Add("3:17:2:ep" + lenPrefixed("topic") + "data")
	f.Add(lenPrefixed("t") + lenPrefixed("m") + "i")
	f.Add("18446744073709551615:1:0:1:t")
	f.Fuzz(func(t *testing.T, s string) {
		if p, ok := parsePublication(s); ok {
			again := strconv.FormatUint(p.Offset, 10) + ":" + strconv.FormatInt(p.Time.UnixNano(), 10) + ":" +
				lenPrefixed(p.Epoch) + lenPrefixed(p.Topic) + string(p.Payload)
			if q, ok := parsePublication(again); !ok || q.Offset != p.Offset || q.Topic != p.Topic ||
				q.Epoch != p.Epoch || string(q.Payload) != string(p.Payload) {
				t.Fatalf("round trip of %q failed", s)
			}
		}
		_, _ = parsePresence(s)
	})
}

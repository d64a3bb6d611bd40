package protocol

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRoundTrip(t *testing.T) {
	in := Envelope{Type: TypeMessage, Conv: "c1", ID: "m1", Offset: 7, Epoch: "e", Text: "héllo \"x\"", Traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
	b, err := Encode(&in)
	require.NoError(t, err)
	assert.NotContains(t, string(b), "position", "empty fields are omitted")
	out, err := Decode(b)
	require.NoError(t, err)
	assert.Equal(t, in, out)
}

func TestDecodeRejects(t *testing.T) {
	for name, in := range map[string]string{
		"not json":      "hello",
		"truncated":     `{"type":"message"`,
		"no type":       `{"conv":"x"}`,
		"wrong kind":    `{"type":5}`,
		"array":         `[1,2]`,
		"huge text":     `{"type":"message","text":"` + strings.Repeat("a", MaxText+1) + `"}`,
		"huge frame":    strings.Repeat(" ", MaxFrame+1),
		"bad offset":    `{"type":"resume","offset":-1}`,
		"trailing junk": `{"type":"ping"} x`,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Decode([]byte(in))
			assert.ErrorIs(t, err, ErrMalformed)
		})
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"type":"message","conv":"c","id":"1","text":"hi"}`))
	f.Add([]byte(`{"type":"resume","conv":"c","offset":3,"epoch":"x"}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := Decode(data)
		if err != nil {
			return
		}
		if e.Type == "" {
			t.Fatal("accepted envelope without type")
		}
		if utf8.Valid(data) {
			b, err := Encode(&e)
			require.NoError(t, err)
			_, err = Decode(b)
			require.NoError(t, err)
		}
	})
}

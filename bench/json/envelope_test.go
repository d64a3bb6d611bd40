package jsonbench

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCodecsAgree checks that every codec's output decodes, with every
// codec, to the original envelope — the benchmark compares equal work.
func TestCodecsAgree(t *testing.T) {
	want := Sample()
	for _, enc := range Codecs() {
		data, err := enc.Marshal(&want)
		require.NoError(t, err, enc.Name)
		assert.Greater(t, len(data), 400, enc.Name)
		for _, dec := range Codecs() {
			var got Envelope
			require.NoError(t, dec.Unmarshal(data, &got), "%s → %s", enc.Name, dec.Name)
			assert.Equal(t, want, got, "%s → %s", enc.Name, dec.Name)
		}
	}
}

func TestCodecsRejectBadInput(t *testing.T) {
	for _, c := range Codecs() {
		var e Envelope
		assert.Error(t, c.Unmarshal([]byte(`{"type":"message","offset":"nope"}`), &e), c.Name)
		assert.Error(t, c.Unmarshal([]byte(`{"type":`), &e), c.Name)
	}
}

// warm runs a codec a few times before it is measured, so that sonic's JIT
// compilation of the Envelope codec (done once per type in a real server)
// is not billed to the first benchmark samples.
func warm(b *testing.B, c Codec, e *Envelope) {
	b.Helper()
	for range 100 {
		data, err := c.Marshal(e)
		if err != nil {
			b.Fatal(err)
		}
		var out Envelope
		if err := c.Unmarshal(data, &out); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMarshal(b *testing.B) {
	e := Sample()
	for _, c := range Codecs() {
		warm(b, c, &e)
		b.Run("codec="+c.Name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Marshal(&e); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkUnmarshal(b *testing.B) {
	e := Sample()
	for _, c := range Codecs() {
		warm(b, c, &e)
		data, err := c.Marshal(&e)
		if err != nil {
			b.Fatal(err)
		}
		b.Run("codec="+c.Name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				var out Envelope
				if err := c.Unmarshal(data, &out); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

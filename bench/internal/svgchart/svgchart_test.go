package svgchart

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestLineAndBarsAreEscapedSVG(t *testing.T) {
	var b bytes.Buffer
	Line(&b, []Series{{Name: "<a>", Points: [][2]float64{{0, 1}, {1, 3}}}, {Name: "b", Points: [][2]float64{{0, 2}}}},
		LineOptions{XLabel: "x", YLabel: "y", Marks: []Mark{{X: 0.5, Label: "kill"}}, Thresholds: []Threshold{{Y: 50, Label: "50 ms"}}})
	Bars(&b, []Bar{{Label: "<b>", Value: 2, Text: "2"}, {Label: "c", Value: 0}}, "unit")
	out := b.String()
	assert.Equal(t, 2, strings.Count(out, "<svg"))
	assert.Contains(t, out, "&lt;a&gt;")
	assert.Contains(t, out, "&lt;b&gt;")
	assert.Contains(t, out, "kill")
	assert.Contains(t, out, "50 ms")
	assert.NotContains(t, out, "<a>")
	// Empty input still draws axes.
	b.Reset()
	Line(&b, nil, LineOptions{XTicks: []string{"50", "99"}})
	assert.Contains(t, b.String(), "</svg>")
}

func TestNiceCeilAndShort(t *testing.T) {
	for v, want := range map[float64]float64{0.7: 1, 1: 1, 1.5: 2, 2.2: 2.5, 3: 5, 7: 10, 120: 200, -1: 1} {
		assert.Equal(t, want, NiceCeil(v), "v=%v", v)
	}
	assert.Equal(t, "1.5k", Short(1500))
	assert.Equal(t, "2M", Short(2e6))
	assert.Equal(t, "3", Short(3))
	assert.Equal(t, "0.25", Short(0.25))
}

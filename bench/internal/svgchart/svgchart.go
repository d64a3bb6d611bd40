// Package svgchart draws the benchmark reports' charts as inline SVG: line
// charts (with optional categorical x ticks, vertical event marks and
// horizontal threshold lines) and horizontal bar charts. The output needs
// no script, stylesheet or font from anywhere, so a report stays one
// self-contained HTML file. Every text is HTML-escaped.
//
// It is the chart half of cmd/wsbench's report, shared here for
// cmd/deskbench.
package svgchart

import (
	"fmt"
	"html"
	"io"
	"math"
	"strings"
)

// Palette is the default colour cycle.
var Palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"}

// Series is one line: points (x, y) in drawing order.
type Series struct {
	Name   string
	Color  string // default: Palette by position
	Points [][2]float64
}

// Mark is a vertical line at X with a label (an event on a timeline).
type Mark struct {
	X     float64
	Label string
}

// Threshold is a horizontal dashed line at Y with a label (a target).
type Threshold struct {
	Y     float64
	Label string
}

// LineOptions configures Line.
type LineOptions struct {
	XLabel, YLabel string
	// XTicks, when set, labels x = 0, 1, 2… categorically (percentile axes).
	XTicks     []string
	Marks      []Mark
	Thresholds []Threshold
	// MinY/MaxY fix the y range when MaxY > MinY; default 0..max of the data.
	MinY, MaxY float64
}

const (
	width, height               = 760, 320
	left, bottom, top, rightPad = 70, 40, 10, 150
)

// Line draws series on linear axes with a legend on the right.
func Line(w io.Writer, series []Series, o LineOptions) {
	e := html.EscapeString
	maxX, maxY := 0.0, 0.0
	minX := math.Inf(1)
	for _, s := range series {
		for _, p := range s.Points {
			maxX, maxY = math.Max(maxX, p[0]), math.Max(maxY, p[1])
			minX = math.Min(minX, p[0])
		}
	}
	for _, t := range o.Thresholds {
		maxY = math.Max(maxY, t.Y*1.1)
	}
	if math.IsInf(minX, 1) || len(o.XTicks) > 0 {
		minX = 0
	}
	minX = math.Min(minX, 0)
	if maxX <= minX {
		maxX = minX + 1
	}
	minY := 0.0
	if o.MaxY > o.MinY {
		minY, maxY = o.MinY, o.MaxY
	} else {
		if maxY <= 0 {
			maxY = 1
		}
		maxY = NiceCeil(maxY)
	}
	plotW := float64(width - left - rightPad)
	px := func(x float64) float64 { return left + (x-minX)/(maxX-minX)*plotW }
	py := func(y float64) float64 {
		y = math.Min(math.Max(y, minY), maxY)
		return height - bottom - (y-minY)/(maxY-minY)*(height-bottom-top)
	}
	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" role="img" aria-label="%s">`+"\n", width, height, e(o.YLabel))
	fmt.Fprintf(w, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333"/><line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333"/>`+"\n",
		left, height-bottom, width-rightPad, height-bottom, left, top, left, height-bottom)
	for i := 0; i <= 4; i++ {
		y := minY + (maxY-minY)*float64(i)/4
		fmt.Fprintf(w, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#eee"/><text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n",
			left, py(y), width-rightPad, py(y), left-4, py(y)+4, Short(y))
	}
	if len(o.XTicks) > 0 {
		for i, l := range o.XTicks {
			fmt.Fprintf(w, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", px(float64(i)), height-bottom+16, e(l))
		}
	} else {
		for i := 0; i <= 4; i++ {
			x := minX + (maxX-minX)*float64(i)/4
			fmt.Fprintf(w, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", px(x), height-bottom+16, Short(x))
		}
	}
	fmt.Fprintf(w, `<text x="%d" y="%d" text-anchor="middle">%s</text>`+"\n", left+int(plotW)/2, height-6, e(o.XLabel))
	fmt.Fprintf(w, `<text x="14" y="%d" transform="rotate(-90 14 %d)" text-anchor="middle">%s</text>`+"\n", height/2, height/2, e(o.YLabel))
	for _, t := range o.Thresholds {
		fmt.Fprintf(w, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#999" stroke-dasharray="6 4"/><text x="%d" y="%.1f" fill="#666">%s</text>`+"\n",
			left, py(t.Y), width-rightPad, py(t.Y), width-rightPad+4, py(t.Y)+4, e(t.Label))
	}
	for _, m := range o.Marks {
		fmt.Fprintf(w, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#000" stroke-dasharray="3 3"/><text x="%.1f" y="%d">%s</text>`+"\n",
			px(m.X), top, px(m.X), height-bottom, px(m.X)+3, top+12, e(m.Label))
	}
	for i, s := range series {
		c := s.Color
		if c == "" {
			c = Palette[i%len(Palette)]
		}
		pts := make([]string, 0, len(s.Points))
		for _, p := range s.Points {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(p[0]), py(p[1])))
		}
		fmt.Fprintf(w, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"><title>%s</title></polyline>`+"\n", c, strings.Join(pts, " "), e(s.Name))
		ly := top + 14 + i*16
		fmt.Fprintf(w, `<rect x="%d" y="%d" width="12" height="3" fill="%s"/><text x="%d" y="%d">%s</text>`+"\n",
			width-rightPad+8, ly-4, c, width-rightPad+24, ly, e(s.Name))
	}
	fmt.Fprintln(w, "</svg>")
}

// Bar is one bar of a bar chart.
type Bar struct {
	Label string
	Value float64
	Text  string // printed after the bar
	Color string // default: Palette by position
}

// Bars draws horizontal bars, longest = largest value.
func Bars(w io.Writer, bars []Bar, unit string) {
	const bw, rowH, bl = 760, 26, 220
	h := len(bars)*rowH + 30
	maxV := 0.0
	for _, b := range bars {
		maxV = math.Max(maxV, b.Value)
	}
	if maxV <= 0 {
		maxV = 1
	}
	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" role="img" aria-label="%s">`+"\n", bw, h, html.EscapeString(unit))
	for i, b := range bars {
		y := 10 + i*rowH
		l := float64(bw-bl-130) * b.Value / maxV
		c := b.Color
		if c == "" {
			c = Palette[i%len(Palette)]
		}
		fmt.Fprintf(w, `<text x="%d" y="%d" text-anchor="end">%s</text><rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/><text x="%.1f" y="%d">%s</text>`+"\n",
			bl-6, y+15, html.EscapeString(b.Label), bl, y, math.Max(l, 1), rowH-6, c, float64(bl)+l+6, y+15, html.EscapeString(b.Text))
	}
	fmt.Fprintf(w, `<text x="%d" y="%d">%s</text></svg>`+"\n", bl, h-4, html.EscapeString(unit))
}

// NiceCeil rounds v > 0 up to 1, 2, 2.5 or 5 times a power of ten.
func NiceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

// Short formats an axis value compactly (1.5k, 2M, 0.25).
func Short(v float64) string {
	switch {
	case math.Abs(v) >= 1e6:
		return fmt.Sprintf("%.3gM", v/1e6)
	case math.Abs(v) >= 1e3:
		return fmt.Sprintf("%.3gk", v/1e3)
	case v == math.Trunc(v):
		return fmt.Sprintf("%.0f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

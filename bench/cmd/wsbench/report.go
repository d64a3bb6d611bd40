package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"math"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/switchboard-go/switchboard/bench/internal/svgchart"
)

// writeJSONLines prints one JSON object per result per line.
func writeJSONLines(w io.Writer, rs []Result) error {
	enc := json.NewEncoder(w)
	for _, r := range rs {
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	return nil
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// writeTable prints the human-readable summary, then same-run ratios.
func writeTable(w io.Writer, rs []Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\tscenario\tconns\testabl.\tconnect s\tRSS\tRSS/conn\tgoroutines\theap\tGC p99 ms\tp50 ms\tp99 ms\tp99.9 ms\tmsgs/s\tbcast p50 ms\tbcast p99 ms\tsrv CPU s\tcli CPU s\tnote\t")
	for _, r := range rs {
		note := r.Error
		if r.Scenario == "churn" && r.LeakOK != nil {
			note = fmt.Sprintf("closed %d reopened %d, RSS %s→%s, leak ok=%v", r.ChurnClosed, r.ChurnOpened, mib(r.ChurnRSSBeforeBytes), mib(r.ChurnRSSAfterBytes), *r.LeakOK)
		}
		if (r.Scenario == "echo" || r.Scenario == "broadcast") && r.Received < r.Sent {
			note = fmt.Sprintf("%d of %d received", r.Received, r.Sent)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.2f\t%s\t%.0f B\t%d\t%s\t%.2f\t%.2f\t%.2f\t%.2f\t%.0f\t%.2f\t%.2f\t%.2f\t%.2f\t%s\t\n",
			r.Target, r.Scenario, r.Conns, r.Established, r.ConnectSeconds, mib(r.ServerRSSBytes), r.RSSPerConnBytes,
			r.ServerGoroutines, mib(r.ServerHeapInuse), r.GCPauseP99MS, r.P50MS, r.P99MS, r.P999MS, r.MsgsPerSec,
			r.BroadcastP50, r.BroadcastP99, r.ServerCPUSeconds, r.ClientCPUSeconds, note)
	}
	_ = tw.Flush()
	if lines := ratioLines(rs); len(lines) > 0 {
		fmt.Fprintln(w)
		for _, l := range lines {
			fmt.Fprintln(w, l)
		}
	}
}

// Targets that are ours; every other target is a peer (server_*.go).
var ownTargets = map[string]bool{"switchboard": true, "switchboard-pool": true}

// ratioLines compares, scenario by scenario, our targets against baseline
// and then every other peer against switchboard. For every
// figure lower is better; the wording says which way it went.
func ratioLines(rs []Result) []string {
	byTarget := func(target string) map[string]Result {
		m := map[string]Result{}
		for _, r := range rs {
			if r.Target == target && r.Error == "" {
				m[r.Scenario] = r
			}
		}
		return m
	}
	base, sb := byTarget("baseline"), byTarget("switchboard")
	var out []string
	for _, r := range rs {
		if b, ok := base[r.Scenario]; ok && ownTargets[r.Target] && r.Error == "" {
			out = append(out, ratioLine(r, b))
		}
	}
	for _, r := range rs {
		if s, ok := sb[r.Scenario]; ok && !ownTargets[r.Target] && r.Target != "baseline" && r.Error == "" {
			out = append(out, ratioLine(r, s))
		}
	}
	return out
}

// ratioLine words one scenario of target r against the same scenario of
// reference target b.
func ratioLine(r, b Result) string {
	vs := r.Target + " vs " + b.Target
	switch r.Scenario {
	case "idle":
		return fmt.Sprintf("%s, idle: RSS per connection %s (%.0f B vs %.0f B); goroutines %d vs %d",
			vs, compare(r.RSSPerConnBytes, b.RSSPerConnBytes), r.RSSPerConnBytes, b.RSSPerConnBytes, r.ServerGoroutines, b.ServerGoroutines)
	case "echo":
		return fmt.Sprintf("%s, echo: round-trip p99 %s (%.2f vs %.2f ms); server CPU %s (%.2f vs %.2f s)",
			vs, compare(r.P99MS, b.P99MS), r.P99MS, b.P99MS, compare(r.ServerCPUSeconds, b.ServerCPUSeconds), r.ServerCPUSeconds, b.ServerCPUSeconds)
	case "broadcast":
		return fmt.Sprintf("%s, broadcast: completion p50 %s (%.2f vs %.2f ms), p99 %s (%.2f vs %.2f ms)",
			vs, compare(r.BroadcastP50, b.BroadcastP50), r.BroadcastP50, b.BroadcastP50, compare(r.BroadcastP99, b.BroadcastP99), r.BroadcastP99, b.BroadcastP99)
	default: // churn
		return fmt.Sprintf("%s, churn: RSS after churn %s vs %s", vs, mib(r.ChurnRSSAfterBytes), mib(b.ChurnRSSAfterBytes))
	}
}

// compare words a lower-is-better figure of a target against a reference
// target (named baseline here).
func compare(target, baseline float64) string {
	switch {
	case target <= 0 || baseline <= 0:
		return "n/a"
	case target <= baseline:
		return fmt.Sprintf("%.2f× lower (better)", baseline/target)
	default:
		return fmt.Sprintf("%.2f× higher (worse)", target/baseline)
	}
}

// ---- HTML report -------------------------------------------------------

// palette has a colour per target of a full run (every target built).
var palette = svgchart.Palette

func writeHTMLFile(path string, cfg config, rs []Result) error {
	var b bytes.Buffer
	writeHTML(&b, cfg, rs, time.Now())
	return os.WriteFile(path, b.Bytes(), 0o644)
}

func targetsOf(rs []Result) []string {
	seen := map[string]bool{}
	var out []string
	for _, r := range rs {
		if !seen[r.Target] {
			seen[r.Target] = true
			out = append(out, r.Target)
		}
	}
	return out
}

func pick(rs []Result, target, scenario string) (Result, bool) {
	for _, r := range rs {
		if r.Target == target && r.Scenario == scenario && r.Error == "" {
			return r, true
		}
	}
	return Result{}, false
}

// writeHTML renders a self-contained report: no scripts, no external
// resources; charts are inline SVG.
func writeHTML(w io.Writer, cfg config, rs []Result, now time.Time) {
	e := html.EscapeString
	targets := targetsOf(rs)
	color := map[string]string{}
	for i, t := range targets {
		color[t] = palette[i%len(palette)]
	}
	fmt.Fprintf(w, `<!doctype html><html><head><meta charset="utf-8"><title>wsbench %s</title>
<style>body{font:14px system-ui,sans-serif;margin:24px;max-width:1100px}table{border-collapse:collapse;font-size:12px}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}th{background:#f4f4f4}h2{margin-top:32px}
.legend span{display:inline-block;margin-right:16px}.sw{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle}
svg text{font:11px system-ui,sans-serif}</style></head><body>
<h1>wsbench — %s</h1>
<p>%d connections per target, scenarios %s. Generated %s. Lower is better everywhere except established and msgs/s.</p>
<p class="legend">`, e(strings.Join(targets, " vs ")), e(strings.Join(targets, " vs ")), cfg.Conns, e(strings.Join(cfg.Scenarios, ", ")), now.Format(time.RFC3339))
	for _, t := range targets {
		fmt.Fprintf(w, `<span><i class="sw" style="background:%s"></i>%s</span>`, color[t], e(t))
	}
	fmt.Fprintln(w, `</p>`)
	if lines := ratioLines(rs); len(lines) > 0 {
		fmt.Fprintln(w, "<h2>Who wins</h2><ul>")
		for _, l := range lines {
			fmt.Fprintf(w, "<li>%s</li>\n", e(l))
		}
		fmt.Fprintln(w, "</ul>")
	}

	// RSS per connection (idle, else the first scenario measured).
	var bars []bar
	for _, t := range targets {
		if r, ok := pick(rs, t, "idle"); ok {
			bars = append(bars, bar{t, r.RSSPerConnBytes, fmt.Sprintf("%.0f B", r.RSSPerConnBytes)})
		}
	}
	if len(bars) > 0 {
		fmt.Fprintln(w, "<h2>Server RSS per idle connection</h2>")
		barChart(w, bars, color, "bytes per connection")
	}

	// Connect curve.
	var series []lineSeries
	for _, t := range targets {
		for _, r := range rs {
			if r.Target == t && len(r.connectCurve) > 0 {
				s := lineSeries{name: t}
				for _, p := range r.connectCurve {
					s.pts = append(s.pts, [2]float64{p.Seconds, float64(p.Established)})
				}
				series = append(series, s)
				break
			}
		}
	}
	if len(series) > 0 {
		fmt.Fprintln(w, "<h2>Connect curve</h2>")
		lineChart(w, series, color, "seconds", "connections established", false)
	}

	// Latency distributions.
	for _, sc := range []struct{ name, title string }{
		{"echo", "Echo round-trip latency by percentile"},
		{"broadcast", "Broadcast delivery latency by percentile (publish → each client)"},
	} {
		var ls []lineSeries
		for _, t := range targets {
			r, ok := pick(rs, t, sc.name)
			if !ok || r.latency.Count == 0 {
				continue
			}
			s := lineSeries{name: t}
			for i, q := range percentileAxis {
				s.pts = append(s.pts, [2]float64{float64(i), ms(r.latency.Quantile(q))})
			}
			ls = append(ls, s)
		}
		if len(ls) > 0 {
			fmt.Fprintf(w, "<h2>%s</h2>\n", e(sc.title))
			lineChart(w, ls, color, "percentile", "milliseconds (log scale)", true)
		}
	}
	var cpu []bar
	for _, t := range targets {
		if r, ok := pick(rs, t, "echo"); ok {
			cpu = append(cpu, bar{t, r.ServerCPUSeconds, fmt.Sprintf("%.2f CPU-s", r.ServerCPUSeconds)})
		}
	}
	if len(cpu) > 0 {
		fmt.Fprintln(w, "<h2>Server CPU during echo</h2>")
		barChart(w, cpu, color, "CPU seconds, all server processes")
	}
	var bc []bar
	for _, t := range targets {
		if r, ok := pick(rs, t, "broadcast"); ok {
			bc = append(bc, bar{t + " p50", r.BroadcastP50, fmt.Sprintf("%.2f ms", r.BroadcastP50)})
			bc = append(bc, bar{t + " p99", r.BroadcastP99, fmt.Sprintf("%.2f ms", r.BroadcastP99)})
		}
	}
	if len(bc) > 0 {
		fmt.Fprintln(w, "<h2>Broadcast completion (until the last connection has it)</h2>")
		barChart(w, bc, color, "milliseconds")
	}

	fmt.Fprintln(w, "<h2>All figures</h2><table><tr>")
	cols := []string{"target", "scenario", "conns", "established", "connect_seconds", "server_rss_bytes", "rss_per_conn_bytes", "server_goroutines", "server_heap_inuse_bytes", "gc_pause_p99_ms", "p50_ms", "p99_ms", "p999_ms", "msgs_per_sec", "broadcast_p50_ms", "broadcast_p99_ms", "server_cpu_seconds", "client_cpu_seconds", "error"}
	for _, c := range cols {
		fmt.Fprintf(w, "<th>%s</th>", e(c))
	}
	fmt.Fprintln(w, "</tr>")
	for _, r := range rs {
		var m map[string]any
		raw, _ := json.Marshal(r)
		_ = json.Unmarshal(raw, &m)
		fmt.Fprint(w, "<tr>")
		for _, c := range cols {
			v := m[c]
			s := ""
			switch x := v.(type) {
			case float64:
				if x == math.Trunc(x) {
					s = fmt.Sprintf("%.0f", x)
				} else {
					s = fmt.Sprintf("%.3f", x)
				}
			case nil:
			default:
				s = fmt.Sprint(x)
			}
			fmt.Fprintf(w, "<td>%s</td>", e(s))
		}
		fmt.Fprintln(w, "</tr>")
	}
	fmt.Fprintln(w, "</table></body></html>")
}

var (
	percentileAxis   = []float64{0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9999, 1}
	percentileLabels = []string{"50", "75", "90", "95", "99", "99.5", "99.9", "99.99", "max"}
)

type bar struct {
	label string
	value float64
	text  string
}

func barChart(w io.Writer, bars []bar, color map[string]string, unit string) {
	const width, rowH, left = 760, 26, 170
	h := len(bars)*rowH + 30
	maxV := 0.0
	for _, b := range bars {
		maxV = math.Max(maxV, b.value)
	}
	if maxV <= 0 {
		maxV = 1
	}
	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" role="img" aria-label="%s">`+"\n", width, h, html.EscapeString(unit))
	for i, b := range bars {
		y := 10 + i*rowH
		bw := (width - left - 110) * b.value / maxV
		c := color[strings.Fields(b.label)[0]]
		if c == "" {
			c = palette[0]
		}
		fmt.Fprintf(w, `<text x="%d" y="%d" text-anchor="end">%s</text><rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/><text x="%.1f" y="%d">%s</text>`+"\n",
			left-6, y+15, html.EscapeString(b.label), left, y, math.Max(bw, 1), rowH-6, c, float64(left)+bw+6, y+15, html.EscapeString(b.text))
	}
	fmt.Fprintf(w, `<text x="%d" y="%d">%s</text></svg>`+"\n", left, h-4, html.EscapeString(unit))
}

type lineSeries struct {
	name string
	pts  [][2]float64
}

// lineChart draws series on linear axes; percentile charts use the
// percentileLabels as categorical x ticks and a logarithmic y axis (decades),
// so that targets milliseconds apart stay apart next to one seconds away.
func lineChart(w io.Writer, series []lineSeries, color map[string]string, xLabel, yLabel string, percentiles bool) {
	const width, height, left, bottom, top, right = 760, 320, 70, 40, 10, 20
	maxX, maxY := 0.0, 0.0
	for _, s := range series {
		for _, p := range s.pts {
			maxX, maxY = math.Max(maxX, p[0]), math.Max(maxY, p[1])
		}
	}
	if maxX <= 0 {
		maxX = 1
	}
	if maxY <= 0 {
		maxY = 1
	}
	px := func(x float64) float64 { return left + x/maxX*(width-left-right) }
	var py func(float64) float64
	var yTicks []float64
	if percentiles {
		minY := maxY
		for _, s := range series {
			for _, p := range s.pts {
				if p[1] > 0 {
					minY = math.Min(minY, p[1])
				}
			}
		}
		lo := math.Pow(10, math.Floor(math.Log10(math.Max(minY, 1e-3))))
		hi := math.Max(math.Pow(10, math.Ceil(math.Log10(maxY))), 10*lo)
		for d := lo; d <= hi*1.0001; d *= 10 {
			yTicks = append(yTicks, d)
		}
		py = func(y float64) float64 {
			f := (math.Log10(math.Max(y, lo)) - math.Log10(lo)) / (math.Log10(hi) - math.Log10(lo))
			return height - bottom - f*(height-bottom-top)
		}
	} else {
		maxY = svgchart.NiceCeil(maxY)
		for i := 0; i <= 4; i++ {
			yTicks = append(yTicks, maxY*float64(i)/4)
		}
		py = func(y float64) float64 { return height - bottom - y/maxY*(height-bottom-top) }
	}
	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" role="img" aria-label="%s">`+"\n", width, height, html.EscapeString(yLabel))
	fmt.Fprintf(w, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333"/><line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333"/>`+"\n",
		left, height-bottom, width-right, height-bottom, left, top, left, height-bottom)
	for _, y := range yTicks {
		fmt.Fprintf(w, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#eee"/><text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n",
			left, py(y), width-right, py(y), left-4, py(y)+4, svgchart.Short(y))
	}
	if percentiles {
		for i, l := range percentileLabels {
			fmt.Fprintf(w, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", px(float64(i)), height-bottom+16, l)
		}
	} else {
		for i := 0; i <= 4; i++ {
			x := maxX * float64(i) / 4
			fmt.Fprintf(w, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", px(x), height-bottom+16, svgchart.Short(x))
		}
	}
	fmt.Fprintf(w, `<text x="%d" y="%d" text-anchor="middle">%s</text>`+"\n", (width+left)/2, height-6, html.EscapeString(xLabel))
	fmt.Fprintf(w, `<text x="14" y="%d" transform="rotate(-90 14 %d)" text-anchor="middle">%s</text>`+"\n", height/2, height/2, html.EscapeString(yLabel))
	sort.SliceStable(series, func(a, b int) bool { return series[a].name < series[b].name })
	for _, s := range series {
		var pts []string
		for _, p := range s.pts {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(p[0]), py(p[1])))
		}
		fmt.Fprintf(w, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"><title>%s</title></polyline>`+"\n", color[s.name], strings.Join(pts, " "), html.EscapeString(s.name))
	}
	fmt.Fprintln(w, "</svg>")
}

package observe

import (
	"encoding/json"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// componentMetrics are the metrics other Switchboard packages create through
// the Observer helpers and that the dashboard queries. This is the contract
// between observe/dashboards/switchboard.json and the components: keep it in
// sync with their doc.go files. Each entry is created here exactly as a
// component would, so the exposed names (with _bucket/_sum/_count for
// histograms) come from the real helpers.
var componentMetrics = []struct {
	kind      string // counter, gauge, histogram
	subsystem string
	name      string
	labels    []string
}{
	{"gauge", "gateway", "connections", []string{"role"}},
	{"counter", "gateway", "messages_total", []string{"direction"}},
	{"histogram", "queue", "wait_seconds", []string{"tier"}},
	{"gauge", "queue", "depth", []string{"tier"}},
	{"counter", "sla", "breaches_total", []string{"tier", "kind"}},
	{"counter", "fanout", "deliveries_total", nil},
}

// scrapeSeries returns every series name a real Observer exposes (runtime,
// process and log metrics plus componentMetrics) with its label names.
func scrapeSeries(t *testing.T) map[string]map[string]bool {
	t.Helper()
	o := newTestObserver(t, Config{})
	for _, m := range componentMetrics {
		values := make([]string, len(m.labels))
		for i := range values {
			values[i] = "x"
		}
		switch m.kind {
		case "counter":
			o.Counter(m.subsystem, m.name, "test", m.labels...).WithLabelValues(values...).Inc()
		case "gauge":
			o.Gauge(m.subsystem, m.name, "test", m.labels...).WithLabelValues(values...).Set(1)
		case "histogram":
			o.Histogram(m.subsystem, m.name, "test", nil, m.labels...).WithLabelValues(values...).Observe(0.01)
		default:
			t.Fatalf("unknown kind %q", m.kind)
		}
	}
	mfs, err := o.Gatherer().Gather()
	require.NoError(t, err)
	series := map[string]map[string]bool{}
	for _, mf := range mfs {
		labels := map[string]bool{}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = true
			}
		}
		names := []string{mf.GetName()}
		switch mf.GetType() {
		case dto.MetricType_HISTOGRAM:
			names = append(names, mf.GetName()+"_bucket", mf.GetName()+"_sum", mf.GetName()+"_count")
		case dto.MetricType_SUMMARY:
			names = append(names, mf.GetName()+"_sum", mf.GetName()+"_count")
		}
		for _, n := range names {
			ls := map[string]bool{}
			for l := range labels {
				ls[l] = true
			}
			if strings.HasSuffix(n, "_bucket") {
				ls["le"] = true
			}
			series[n] = ls
		}
	}
	return series
}

// collectQueries walks the dashboard JSON and returns every PromQL
// expression of panels and template variables.
func collectQueries(v any, out *[]string) {
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			if s, ok := val.(string); ok && (k == "expr" || (k == "query" && strings.Contains(s, "label_values("))) {
				*out = append(*out, s)
				continue
			}
			collectQueries(val, out)
		}
	case []any:
		for _, e := range x {
			collectQueries(e, out)
		}
	}
}

var (
	reString      = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	reMatchers    = regexp.MustCompile(`\{[^}]*\}`)
	reRange       = regexp.MustCompile(`\[[^\]]*\]`)
	reGrouping    = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)`)
	reLabelValues = regexp.MustCompile(`label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)[^,]*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)`)
	reIdent       = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	promKeywords  = map[string]bool{"bool": true, "offset": true, "and": true, "or": true, "unless": true}
)

// parseQuery returns the metric names a PromQL (or Grafana label_values)
// query selects and the label names it groups by.
func parseQuery(q string) (metrics, groupLabels []string) {
	if m := reLabelValues.FindStringSubmatch(q); m != nil {
		return []string{m[1]}, []string{m[2]}
	}
	s := reString.ReplaceAllString(q, `""`)
	s = reMatchers.ReplaceAllString(s, " ")
	s = reRange.ReplaceAllString(s, " ")
	for _, g := range reGrouping.FindAllStringSubmatch(s, -1) {
		for _, l := range strings.Split(g[2], ",") {
			if l = strings.TrimSpace(l); l != "" {
				groupLabels = append(groupLabels, l)
			}
		}
	}
	s = reGrouping.ReplaceAllString(s, " ")
	for _, loc := range reIdent.FindAllStringIndex(s, -1) {
		id := s[loc[0]:loc[1]]
		rest := strings.TrimLeft(s[loc[1]:], " \t\n")
		if strings.HasPrefix(rest, "(") || promKeywords[id] {
			continue // a function or aggregation, not a metric
		}
		if loc[0] > 0 && (s[loc[0]-1] >= '0' && s[loc[0]-1] <= '9' || s[loc[0]-1] == '.') {
			continue // exponent or unit inside a number literal
		}
		metrics = append(metrics, id)
	}
	return metrics, groupLabels
}

func TestParseQuery(t *testing.T) {
	m, g := parseQuery(`histogram_quantile(0.95, sum by (tier, le) (rate(a_bucket{job=~"$job", x="}"}[$__rate_interval])))`)
	assert.Equal(t, []string{"a_bucket"}, m)
	assert.Equal(t, []string{"tier", "le"}, g)
	m, _ = parseQuery(`sum(b) / 1048576 + on(instance) c offset 5m`)
	assert.Equal(t, []string{"b", "c"}, m)
	m, g = parseQuery(`label_values(go_info{job=~"$job"}, instance)`)
	assert.Equal(t, []string{"go_info"}, m)
	assert.Equal(t, []string{"instance"}, g)
}

func TestDashboardQueriesNameExistingMetrics(t *testing.T) {
	raw, err := os.ReadFile("dashboards/switchboard.json")
	require.NoError(t, err)
	var dash map[string]any
	require.NoError(t, json.Unmarshal(raw, &dash))
	assert.Equal(t, "switchboard-overview", dash["uid"])

	var queries []string
	collectQueries(dash, &queries)
	require.NotEmpty(t, queries)

	series := scrapeSeries(t)
	targetLabels := map[string]bool{"job": true, "instance": true} // added by Prometheus at scrape
	used := map[string]bool{}
	for _, q := range queries {
		metrics, groups := parseQuery(q)
		require.NotEmpty(t, metrics, "query names no metric: %s", q)
		available := map[string]bool{}
		for l := range targetLabels {
			available[l] = true
		}
		for _, m := range metrics {
			used[m] = true
			ls, ok := series[m]
			if !assert.True(t, ok, "metric %q in query %q is neither exported by an Observer nor a documented component metric", m, q) {
				continue
			}
			for l := range ls {
				available[l] = true
			}
		}
		for _, l := range groups {
			assert.True(t, available[l], "query %q groups by label %q that its metrics do not have", q, l)
		}
	}

	// The panels the issue asks for are all there.
	for _, want := range []string{
		"switchboard_gateway_connections",
		"switchboard_gateway_messages_total",
		"switchboard_queue_wait_seconds_bucket",
		"switchboard_sla_breaches_total",
		"go_sched_latencies_seconds_bucket",
		"go_sched_pauses_total_gc_seconds_bucket",
	} {
		assert.True(t, used[want], "dashboard does not query %s", want)
	}
	names := make([]string, 0, len(used))
	for n := range used {
		names = append(names, n)
	}
	sort.Strings(names)
	t.Logf("dashboard metrics: %s", strings.Join(names, ", "))
}

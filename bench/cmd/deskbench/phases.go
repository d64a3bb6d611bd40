package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"slices"
	"sort"
	"time"

	"github.com/switchboard-go/switchboard/bench/internal/ctl"
	"github.com/switchboard-go/switchboard/bench/internal/plan"
)

type chaosFigures struct {
	node                 string
	killNS, restartNS    int64
	reconnectMS          []float64
	takeoverS            float64 // kill → the last dropped connection has its hello again
	coreTakeoverS        float64 // kill → the first offer any agent received after it
	flowRecoveryS        float64 // kill → acks back to half the pre-kill rate
	dropped, reconnected int64
}

// phasesRun drives the traffic phases on the connected population, then
// ends every conversation, audits the transcripts and joins the
// participants' records.
func (st *runState) phasesRun(ctx context.Context) ([]Result, error) {
	cfg := st.cfg
	var rows []Result
	if cfg.Waiting > 0 {
		shares := plan.Split(cfg.Waiting, len(st.clients))
		if err := ctl.ForEach(st.clients, func(i int, c *ctl.Child) error {
			return c.Call(ctx, "wait", waitArgs{Count: shares[i], Entry: cfg.WaitingEntry}, nil)
		}); err != nil {
			return nil, err
		}
		if err := st.segment(ctx, "queue-fill", time.Minute, func(_ time.Duration, s sample) bool {
			return s.Cnt.Queued >= int64(cfg.Waiting)
		}); err != nil {
			return nil, err
		}
		st.logf("%d customers parked in the queue (entry %q, which no agent has)", cfg.Waiting, cfg.WaitingEntry)
	}
	if cfg.Isolation {
		if err := st.clients[0].Call(ctx, "flood_start", nil, nil); err != nil {
			return nil, err
		}
	}
	if cfg.Warmup > 0 {
		warmEnd := time.Now().Add(cfg.Warmup)
		if err := st.configure(ctx, cfg.active()/cfg.Warmup.Seconds(), cfg.Rate, cfg.WarmupChat, warmEnd); err != nil {
			return nil, err
		}
		if err := st.segment(ctx, "warmup", cfg.Warmup, nil); err != nil {
			return nil, err
		}
	}
	if err := st.configure(ctx, cfg.ConvRate, cfg.Rate, true, time.Time{}); err != nil {
		return nil, err
	}
	if cfg.ProfileDir != "" {
		st.startProfiles(ctx, "steady", cfg.Duration)
	}
	if err := st.segment(ctx, "steady", cfg.Duration, nil); err != nil {
		return nil, err
	}
	rows = append(rows, st.aggregate("steady", "steady", cfg.Rate))

	if cfg.Sweep {
		for _, r := range cfg.SweepRates {
			if err := st.configure(ctx, cfg.ConvRate, r, true, time.Time{}); err != nil {
				return nil, err
			}
			if err := st.segment(ctx, "sweep-settle", 3*time.Second, nil); err != nil {
				return nil, err
			}
			name := fmt.Sprintf("sweep@%.0f", r)
			if err := st.segment(ctx, name, cfg.SweepStep, nil); err != nil {
				return nil, err
			}
			row := st.aggregate(name, "sweep", r)
			rows = append(rows, row)
			ok := row.MsgP99MS <= ms(int64(cfg.SweepP99)) && row.MsgsPerSec >= 0.9*r
			st.logf("sweep: %.0f msgs/s asked, %.0f delivered, p99 %.1f ms: %s", r, row.MsgsPerSec, row.MsgP99MS, map[bool]string{true: "within the bar", false: "over the bar, stopping"}[ok])
			if !ok {
				break
			}
		}
		if err := st.configure(ctx, cfg.ConvRate, cfg.Rate, true, time.Time{}); err != nil {
			return nil, err
		}
	}

	if cfg.Isolation {
		if err := st.segment(ctx, "isolation-base", cfg.IsolationDur, nil); err != nil {
			return nil, err
		}
		fa := floodArgs{On: true, Rate: cfg.FloodRate, Burst: cfg.FloodBurst, TypingRate: cfg.FloodTyping, Size: cfg.FloodSize}
		if err := st.clients[0].Call(ctx, "flood", fa, nil); err != nil {
			return nil, err
		}
		if err := st.segment(ctx, "isolation-flood", cfg.IsolationDur, nil); err != nil {
			return nil, err
		}
		if err := st.clients[0].Call(ctx, "flood", floodArgs{}, nil); err != nil {
			return nil, err
		}
		base := st.aggregate("isolation-base", "isolation-base", cfg.Rate)
		flood := st.aggregate("isolation-flood", "isolation-flood", cfg.Rate)
		rows = append(rows, base, flood)
	}

	if cfg.Chaos {
		if err := st.runChaos(ctx); err != nil {
			return rows, err
		}
		row := st.aggregate("chaos", "chaos", cfg.Rate)
		rows = append(rows, row)
	}

	joinRes, err := st.finish(ctx)
	if err != nil {
		return rows, err
	}
	for i := range rows {
		st.fillConvTimes(&rows[i], joinRes)
	}
	sum := st.summary(rows, joinRes)
	rows = append(rows, sum)
	return rows, nil
}

func (st *runState) startProfiles(ctx context.Context, phase string, d time.Duration) {
	secs := max(1, min(st.cfg.ProfileSecs, int(d.Seconds())-1))
	if err := os.MkdirAll(st.cfg.ProfileDir, 0o755); err != nil {
		st.logf("profile: %v", err)
		return
	}
	for _, n := range st.nodes {
		path := joinPath(st.cfg.ProfileDir, fmt.Sprintf("supportdesk-%s-%s.pprof", n.name, phase))
		st.profiles = append(st.profiles, path)
		go func() {
			if err := n.profile(ctx, secs, path); err != nil {
				st.logf("profile %s: %v", n.name, err)
				return
			}
			st.logf("CPU profile of %s (%ds of %s) in %s", n.name, secs, phase, path)
		}()
	}
}

// runChaos SIGKILLs one node a third into the chaos phase and, with
// -chaos-restart, starts it again -chaos-down later on the same ports and
// store.
func (st *runState) runChaos(ctx context.Context) error {
	cfg := st.cfg
	n := st.nodes[cfg.ChaosNode]
	killAt := cfg.ChaosDuration / 3
	killed := false
	restartErr := make(chan error, 1)
	st.chaos.node = n.name
	err := st.segment(ctx, "chaos", cfg.ChaosDuration, func(el time.Duration, _ sample) bool {
		if killed || el < killAt {
			return false
		}
		killed = true
		st.chaos.killNS = time.Now().UnixNano()
		if err := st.callAll(ctx, "mark", markArgs{NS: st.chaos.killNS}); err != nil {
			st.logf("chaos: mark: %v", err)
		}
		n.kill()
		st.logf("chaos: SIGKILLed %s at %s, restart in %s: %v", n.name, clock(st.chaos.killNS), cfg.ChaosDown, cfg.ChaosRestart)
		if cfg.ChaosRestart {
			go func() {
				if err := ctl.Sleep(ctx, cfg.ChaosDown); err != nil {
					restartErr <- err
					return
				}
				err := n.start(ctx)
				st.chaos.restartNS = time.Now().UnixNano()
				restartErr <- err
			}()
		}
		return false
	})
	if err != nil {
		return err
	}
	if killed && cfg.ChaosRestart {
		if err := <-restartErr; err != nil {
			return fmt.Errorf("chaos: restarting %s: %w", n.name, err)
		}
		st.logf("chaos: %s restarted", n.name)
	}
	return nil
}

func (st *runState) chaosFigures() {
	c := &st.chaos
	if c.killNS == 0 {
		return
	}
	killT := float64(c.killNS-st.startAt.UnixNano()) / 1e9
	var last int64
	var preRate []float64
	var prev *sample
	for i := range st.series {
		s := &st.series[i]
		for _, r := range s.Reconnects {
			if r.DropNS >= c.killNS-int64(time.Second) {
				c.reconnectMS = append(c.reconnectMS, float64(r.HelloNS-r.DropNS)/1e6)
				last = max(last, r.HelloNS)
			}
		}
		if s.FirstOfferNS > c.killNS && c.coreTakeoverS == 0 {
			c.coreTakeoverS = float64(s.FirstOfferNS-c.killNS) / 1e9
		}
		if prev != nil && s.Phase == "chaos" && s.Dt > 0 {
			rate := float64(s.Cnt.Acked-prev.Cnt.Acked) / s.Dt
			switch {
			case s.T < killT:
				preRate = append(preRate, rate)
			case c.flowRecoveryS == 0 && len(preRate) > 0 && rate >= 0.5*mean(preRate) && s.T-s.Dt >= killT:
				c.flowRecoveryS = s.T - s.Dt - killT
			}
		}
		prev = s
	}
	if last > 0 {
		c.takeoverS = float64(last-c.killNS) / 1e9
	}
	if n := len(st.series); n > 0 {
		c.dropped, c.reconnected = st.series[n-1].Cnt.Dropped, st.series[n-1].Cnt.Reconnected
	}
}

func mean(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

// joinResult is what the participants' records say once joined.
type joinResult struct {
	convs []joinedConv

	acked, lostC2A, lostA2C, lostSelf, missedLive int64
	dupLive, resumeDup, unanswered, recovered     int64
	auditRecovered, rejected, positions           int64
	noAgentRecord, unfinished                     int
	samples                                       []string // a few lost messages, for the log
}

type joinedConv struct {
	conv                        string
	tier                        int8
	flood, waiting              bool
	start, offer, assigned, end int64 // customer's start, first offer seen by an agent, customer's assigned
}

// finish stops the traffic, lets acknowledgements arrive, ends every
// conversation, sends the final audit resume and joins the reports.
func (st *runState) finish(ctx context.Context) (joinResult, error) {
	var jr joinResult
	if err := st.configure(ctx, 0, st.cfg.Rate, false, time.Time{}); err != nil {
		return jr, err
	}
	// Every acknowledgement, then every live copy: the audit below counts
	// what had not arrived live by then, so wait until nothing moves.
	quiet := 0
	if err := st.segment(ctx, "drain", st.cfg.DrainTimeout, func(el time.Duration, s sample) bool {
		prev := st.series[len(st.series)-2].Cnt
		moved := s.Cnt.RecvC2A+s.Cnt.RecvA2C+s.Cnt.RecvSelf+s.Cnt.RecvFlood != prev.RecvC2A+prev.RecvA2C+prev.RecvSelf+prev.RecvFlood
		if s.Pending == 0 && !moved {
			quiet++
		} else {
			quiet = 0
		}
		return quiet >= 2
	}); err != nil {
		return jr, err
	}
	if last := st.series[len(st.series)-1]; last.Pending > 0 {
		st.logf("finish: %d messages still unacknowledged after -drain-timeout %s", last.Pending, st.cfg.DrainTimeout)
	}
	if err := st.callAll(ctx, "resolve_all", nil); err != nil {
		return jr, err
	}
	if err := st.segment(ctx, "resolve", 30*time.Second, func(el time.Duration, s sample) bool {
		if s.Unresolved == 0 {
			return true
		}
		if int(el.Seconds())%3 == 2 { // offers accepted meanwhile, cancels refused: again
			if err := st.callAll(ctx, "resolve_all", nil); err != nil {
				st.logf("resolve_all: %v", err)
			}
		}
		return false
	}); err != nil {
		return jr, err
	}
	if err := st.callAll(ctx, "audit", nil); err != nil {
		return jr, err
	}
	var last sample
	if err := st.segment(ctx, "audit", 30*time.Second, func(_ time.Duration, s sample) bool {
		last = s
		return s.Unresolved == 0
	}); err != nil {
		return jr, err
	}
	if last.Unresolved > 0 {
		st.logf("finish: %d conversation views still unresolved or awaiting a resume after the audit", last.Unresolved)
	}
	reports := make([]reportReply, len(st.clients))
	if err := ctl.ForEach(st.clients, func(i int, c *ctl.Child) error {
		return c.Call(ctx, "report", nil, &reports[i])
	}); err != nil {
		return jr, err
	}
	return join(reports), nil
}

// join pairs every conversation's customer and agent records and counts
// what the other side (and the sender itself) did not receive.
func join(reports []reportReply) joinResult {
	type both struct {
		c      *convReport
		agents []*convReport
	}
	by := map[string]*both{}
	for i := range reports {
		for j := range reports[i].Convs {
			cr := &reports[i].Convs[j]
			b := by[cr.Conv]
			if b == nil {
				b = &both{}
				by[cr.Conv] = b
			}
			if cr.Role == "c" {
				b.c = cr
			} else {
				b.agents = append(b.agents, cr)
			}
		}
	}
	ids := make([]string, 0, len(by))
	for id := range by {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var jr joinResult
	note := func(format string, args ...any) {
		if len(jr.samples) < 10 {
			jr.samples = append(jr.samples, fmt.Sprintf(format, args...))
		}
	}
	for _, id := range ids {
		b := by[id]
		var a *convReport // the agent who had it assigned (the last one)
		var firstOffer int64
		for _, ar := range b.agents {
			if ar.Offer != 0 {
				firstOffer = minNonZero(firstOffer, ar.Offer)
			}
			if ar.Assigned != 0 && (a == nil || ar.Assigned > a.Assigned) {
				a = ar
			}
		}
		if a == nil && len(b.agents) > 0 {
			a = b.agents[0]
		}
		for _, r := range append([]*convReport{b.c}, b.agents...) {
			if r == nil {
				continue
			}
			if (r.Assigned != 0 && r.Resolved == 0) || r.ResumeOut > 0 {
				jr.unfinished++
				note("conversation %s: the %s's view never finished: assigned %v, resolved %v, active %v, resolving %v, resumes out %d, last offset %d",
					id, r.Role, r.Assigned != 0, r.Resolved != 0, r.Active, r.Resolving, r.ResumeOut, r.Final)
			}
			jr.dupLive += int64(r.DupLive)
			if r.DupLive > 0 {
				note("conversation %s: the %s received %d messages twice live (not overlapping a resume); %d resumes, last offset %d",
					id, r.Role, r.DupLive, r.Resumes, r.Final)
			}
			jr.resumeDup += int64(r.ResumeDup)
			jr.unanswered += int64(r.Pending)
			jr.recovered += int64(r.Recovered)
			jr.auditRecovered += int64(r.AuditRecovered)
			jr.rejected += int64(r.Rejected)
			jr.positions += int64(r.Positions)
			jr.acked += int64(r.Acked.count())
			if n, s := r.Acked.minus(r.Recv); n > 0 {
				jr.lostSelf += int64(n)
				note("conversation %s: %d of %s's acknowledged messages never came back to it (offsets %v)", id, n, r.Role, s)
			}
		}
		if b.c != nil && a != nil {
			n, s := b.c.Acked.minus(a.Recv)
			jr.lostC2A += int64(n)
			if n > 0 {
				note("conversation %s: %d acknowledged customer messages never reached the agent (offsets %v)", id, n, s)
			}
			m, s2 := a.Acked.minus(b.c.Recv)
			jr.lostA2C += int64(m)
			if m > 0 {
				note("conversation %s: %d acknowledged agent messages never reached the customer (offsets %v)", id, m, s2)
			}
			ml, s3 := b.c.Acked.minus(a.Live)
			ml2, s4 := a.Acked.minus(b.c.Live)
			jr.missedLive += int64(ml + ml2)
			if ml+ml2 > 0 {
				note("conversation %s: %d customer messages (offsets %v) and %d agent messages (offsets %v) acknowledged but not delivered live to the other side; customer: start %s assigned %s resolved %s, %d live of %d, %d resumes, sent %d, acked %d, refused %d; agent: offer %s assigned %s resolved %s, %d live of %d, %d resumes, sent %d, acked %d, refused %d",
					id, ml, s3, ml2, s4, clock(b.c.Start), clock(b.c.Assigned), clock(b.c.Resolved), b.c.Live.count(), b.c.Recv.count(), b.c.Resumes, b.c.Sent, b.c.Acked.count(), b.c.Rejected,
					clock(a.Offer), clock(a.Assigned), clock(a.Resolved), a.Live.count(), a.Recv.count(), a.Resumes, a.Sent, a.Acked.count(), a.Rejected)
			}
		} else if b.c != nil && b.c.Acked.count() > 0 {
			jr.noAgentRecord++
			jr.lostC2A += int64(b.c.Acked.count())
			note("conversation %s: %d acknowledged customer messages and no agent ever held it", id, b.c.Acked.count())
		}
		if b.c != nil {
			jc := joinedConv{conv: id, tier: b.c.Tier, flood: b.c.Flood, waiting: b.c.Waiting, start: b.c.Start, offer: firstOffer, assigned: b.c.Assigned, end: b.c.Resolved}
			jr.convs = append(jr.convs, jc)
		}
	}
	return jr
}

// clock formats a Unix-ns time of day for the log.
func clock(ns int64) string {
	if ns == 0 {
		return "-"
	}
	return time.Unix(0, ns).UTC().Format("15:04:05.000")
}

// fillConvTimes adds the time to offer and to assignment of the
// conversations started during r's phase(s), by tier.
func (st *runState) fillConvTimes(r *Result, jr joinResult) {
	var spans []span
	for _, sp := range st.phases {
		if sp.name == r.phaseKey {
			spans = append(spans, sp)
		}
	}
	offer := [4][]float64{}
	assign := [4][]float64{}
	for _, c := range jr.convs {
		if c.flood || c.waiting || c.start == 0 {
			continue
		}
		in := false
		for _, sp := range spans {
			if c.start >= sp.start && c.start < sp.end {
				in = true
				break
			}
		}
		if !in {
			continue
		}
		if c.offer > 0 {
			v := float64(c.offer-c.start) / 1e6
			offer[c.tier] = append(offer[c.tier], v)
			offer[3] = append(offer[3], v)
		}
		if c.assigned > 0 {
			v := float64(c.assigned-c.start) / 1e6
			assign[c.tier] = append(assign[c.tier], v)
			assign[3] = append(assign[3], v)
		}
	}
	names := [4]string{"vip", "premium", "standard", "all"}
	r.TimeToOffer = map[string]quant{}
	r.TimeToAssign = map[string]quant{}
	for i, n := range names {
		r.TimeToOffer[n] = quantOf(offer[i])
		r.TimeToAssign[n] = quantOf(assign[i])
	}
	r.tto = offer
	r.tta = assign
}

type quant struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

func quantOf(v []float64) quant {
	if len(v) == 0 {
		return quant{}
	}
	s := slices.Clone(v)
	slices.Sort(s)
	at := func(q float64) float64 {
		i := int(math.Ceil(q*float64(len(s)))) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	return quant{N: len(s), P50: at(0.5), P99: at(0.99), Max: s[len(s)-1]}
}

// summary is the run's last row: the totals of the join (losses), the
// sweep's highest passing rate, the isolation and chaos figures.
func (st *runState) summary(rows []Result, jr joinResult) Result {
	cfg := st.cfg
	r := st.baseRow("summary", cfg.Rate)
	for i := range rows {
		setRunTotals(&rows[i], jr)
	}
	setRunTotals(&r, jr)
	for _, s := range jr.samples {
		st.logf("check: %s", s)
	}
	if cfg.Sweep {
		for _, row := range rows {
			if row.Phase == "sweep" && row.MsgP99MS <= ms(int64(cfg.SweepP99)) && row.MsgsPerSec >= 0.9*row.TargetRate {
				r.SweepMaxRate = math.Max(r.SweepMaxRate, row.TargetRate)
			}
		}
	}
	for _, row := range rows {
		switch row.Phase {
		case "steady":
			r.MsgP50MS, r.MsgP99MS, r.MsgP999MS = row.MsgP50MS, row.MsgP99MS, row.MsgP999MS
			r.MsgsPerSec, r.TimeToOffer, r.TimeToAssign = row.MsgsPerSec, row.TimeToOffer, row.TimeToAssign
			r.ServerCPUSeconds, r.ServerCores, r.RSSPerConnBytes, r.ServerRSSBytes = row.ServerCPUSeconds, row.ServerCores, row.RSSPerConnBytes, row.ServerRSSBytes
		case "isolation-base":
			r.IsolationP99BaseMS = row.MsgP99MS
		case "isolation-flood":
			r.IsolationP99FloodMS = row.MsgP99MS
			r.FloodSent, r.FloodReceived = row.FloodSent, row.FloodReceived
		}
	}
	if r.IsolationP99BaseMS > 0 {
		r.IsolationRisePct = (r.IsolationP99FloodMS/r.IsolationP99BaseMS - 1) * 100
	}
	st.chaosFigures() // after the finish: late reconnects count too
	if c := st.chaos; c.killNS != 0 {
		r.ChaosNode = c.node
		r.TakeoverSeconds = c.takeoverS
		r.CoreTakeoverSeconds = c.coreTakeoverS
		r.FlowRecoverySeconds = c.flowRecoveryS
		q := quantOf(c.reconnectMS)
		r.ReconnectP50MS, r.ReconnectP99MS, r.ReconnectMaxMS, r.Reconnects = q.P50, q.P99, q.Max, q.N
	}
	r.Profiles = append([]string{}, st.profiles...)
	return r
}

func setRunTotals(r *Result, jr joinResult) {
	r.RunAcked = jr.acked
	r.RunLostC2A, r.RunLostA2C, r.RunLostSelf = jr.lostC2A, jr.lostA2C, jr.lostSelf
	r.RunLost = jr.lostC2A + jr.lostA2C
	r.RunMissedLive = jr.missedLive
	r.RunDuplicated = jr.dupLive
	r.RunUnanswered = jr.unanswered
	r.RunRecovered = jr.recovered
	r.RunAuditRecovered = jr.auditRecovered
	r.LossOK = r.RunLost == 0 && r.RunLostSelf == 0 && r.RunDuplicated == 0 && r.RunUnanswered == 0 && r.RunMissedLive == 0
}

// checkStrict lists what makes a -strict run (and CI's smoke) fail.
func checkStrict(rows []Result, chaos bool) []string {
	var out []string
	for _, r := range rows {
		if r.Error != "" {
			out = append(out, r.Phase+": "+r.Error)
		}
		if r.Phase != "summary" {
			continue
		}
		if r.Established < r.Conns {
			out = append(out, fmt.Sprintf("%d of %d connections established", r.Established, r.Conns))
		}
		if r.RunLost > 0 || r.RunLostSelf > 0 {
			out = append(out, fmt.Sprintf("lost acknowledged messages: %d customer→agent, %d agent→customer, %d to their own sender", r.RunLostC2A, r.RunLostA2C, r.RunLostSelf))
		}
		if r.RunMissedLive > 0 {
			out = append(out, fmt.Sprintf("%d acknowledged messages were not delivered live (only the final audit resume brought them)", r.RunMissedLive))
		}
		if r.RunDuplicated > 0 {
			out = append(out, fmt.Sprintf("%d messages delivered twice live", r.RunDuplicated))
		}
		if r.RunUnanswered > 0 {
			out = append(out, fmt.Sprintf("%d messages neither acknowledged nor refused", r.RunUnanswered))
		}
		if r.RunAcked == 0 {
			out = append(out, "no message was acknowledged")
		}
		if !chaos && r.Dropped > 0 {
			out = append(out, fmt.Sprintf("%d connections dropped by the server", r.Dropped))
		}
	}
	return out
}

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"time"

	"github.com/switchboard-go/switchboard/bench/internal/logw"
)

// echoResult is the same-run reference: the gateway's own echo, measured by
// cmd/wsbench (target switchboard, scenario echo) at the desk run's
// connection count and message rate, after the desk processes are gone.
// Its latency is a round trip (client → gateway → client); the desk's is
// one way (sender → server → the other participant).
type echoResult struct {
	Conns      int
	Rate       float64
	P50MS      float64
	P99MS      float64
	P999MS     float64
	MsgsPerSec float64
	Err        string
}

// runEcho builds cmd/wsbench (unless -wsbench names a binary) and runs it as
// a subprocess; its stderr goes to the log with a [wsbench] prefix.
func (st *runState) runEcho(ctx context.Context) echoResult {
	cfg := st.cfg
	r := echoResult{Conns: cfg.conns(), Rate: cfg.Rate}
	bin := cfg.Wsbench
	if bin == "" {
		dir, err := tempDir()
		if err != nil {
			r.Err = err.Error()
			return r
		}
		defer os.RemoveAll(dir)
		bin = joinPath(dir, "wsbench")
		st.logf("building %s for the echo reference", wsbenchPkg)
		if err := goBuild(ctx, wsbenchPkg, bin, st.log); err != nil {
			r.Err = err.Error()
			return r
		}
	}
	args := []string{"-targets", "switchboard", "-scenarios", "echo",
		"-conns", strconv.Itoa(r.Conns), "-rate", strconv.FormatFloat(cfg.Rate, 'f', 0, 64),
		"-duration", cfg.EchoDuration.String(), "-settle", "1s", "-size", strconv.Itoa(max(cfg.MsgSize, 33)), "-json"}
	st.logf("echo reference: wsbench %v", args)
	ctx, cancel := context.WithTimeout(ctx, cfg.EchoDuration+5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = logw.Prefix(st.log, "[wsbench] ")
	runErr := cmd.Run()
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		var row struct {
			Target      string  `json:"target"`
			Scenario    string  `json:"scenario"`
			Established int     `json:"established"`
			P50         float64 `json:"p50_ms"`
			P99         float64 `json:"p99_ms"`
			P999        float64 `json:"p999_ms"`
			MsgsPerSec  float64 `json:"msgs_per_sec"`
			Error       string  `json:"error"`
		}
		if json.Unmarshal(sc.Bytes(), &row) != nil || row.Target != "switchboard" || row.Scenario != "echo" {
			continue
		}
		r.P50MS, r.P99MS, r.P999MS, r.MsgsPerSec = row.P50, row.P99, row.P999, row.MsgsPerSec
		if row.Error != "" {
			r.Err = row.Error
		}
		if row.Established < r.Conns {
			r.Err = fmt.Sprintf("wsbench established %d of %d connections", row.Established, r.Conns)
		}
		return r
	}
	if runErr != nil {
		r.Err = "wsbench: " + runErr.Error()
	} else {
		r.Err = "wsbench printed no echo row"
	}
	return r
}

package procstat

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// userHZ is the unit of the CPU times in /proc/<pid>/stat (USER_HZ, 100 on
// every Linux architecture Go supports).
const userHZ = 100

// ProcSample is what can be read about another process from /proc: its CPU
// time (user + system) and resident memory.
type ProcSample struct {
	CPUSeconds float64 `json:"cpu_seconds"`
	RSSBytes   int64   `json:"rss_bytes"`
}

// Proc samples process pid from /proc/<pid>/stat and /proc/<pid>/statm.
func Proc(pid int) (ProcSample, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ProcSample{}, fmt.Errorf("procstat: %w", err)
	}
	cpu, _, err := ParseStat(b)
	if err != nil {
		return ProcSample{}, err
	}
	rss, err := RSS(fmt.Sprintf("/proc/%d/statm", pid))
	if err != nil {
		return ProcSample{}, err
	}
	return ProcSample{CPUSeconds: cpu, RSSBytes: rss}, nil
}

// Group sums the CPU time and RSS of every process in process group pgid
// (a server started with Setpgid, and its children: PostgreSQL's backends,
// for one). Processes that exit between the listing and the read are
// skipped.
func Group(pgid int) (ProcSample, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return ProcSample{}, fmt.Errorf("procstat: %w", err)
	}
	var s ProcSample
	found := false
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		cpu, g, err := ParseStat(b)
		if err != nil || g != pgid {
			continue
		}
		rss, err := RSS(fmt.Sprintf("/proc/%d/statm", pid))
		if err != nil {
			continue
		}
		found = true
		s.CPUSeconds += cpu
		s.RSSBytes += rss
	}
	if !found {
		return s, fmt.Errorf("procstat: no process in group %d", pgid)
	}
	return s, nil
}

// ParseStat extracts the CPU seconds (utime + stime) and the process group
// from a /proc/<pid>/stat line.
func ParseStat(b []byte) (cpuSeconds float64, pgid int, err error) {
	// The command name (field 2) is parenthesised and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("procstat: stat %q: no command name", b)
	}
	f := bytes.Fields(b[i+1:])
	// f[0] is field 3 (state): pgrp is field 5, utime 14, stime 15.
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("procstat: stat: %d fields after the name", len(f))
	}
	pg, err1 := strconv.Atoi(string(f[2]))
	ut, err2 := strconv.ParseUint(string(f[11]), 10, 64)
	st, err3 := strconv.ParseUint(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return 0, 0, fmt.Errorf("procstat: stat: bad number in %q", b)
	}
	return float64(ut+st) / userHZ, pg, nil
}

// Tree sums the CPU time and RSS of process pid and all its descendants
// (PostgreSQL's postmaster and its backends, for one).
func Tree(pid int) (ProcSample, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return ProcSample{}, fmt.Errorf("procstat: %w", err)
	}
	parent := map[int]int{}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp, err := PPid(p); err == nil {
			parent[p] = pp
		}
	}
	var s ProcSample
	found := false
	for p := range parent {
		in := false
		for q, hops := p, 0; q > 1 && hops < 64; q, hops = parent[q], hops+1 {
			if q == pid {
				in = true
				break
			}
		}
		if !in {
			continue
		}
		ps, err := Proc(p)
		if err != nil {
			continue
		}
		found = true
		s.CPUSeconds += ps.CPUSeconds
		s.RSSBytes += ps.RSSBytes
	}
	if !found {
		return s, fmt.Errorf("procstat: process %d not found", pid)
	}
	return s, nil
}

// PPid returns the parent of process pid.
func PPid(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("procstat: %w", err)
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("procstat: stat %q: no command name", b)
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 2 {
		return 0, fmt.Errorf("procstat: stat: too few fields")
	}
	return strconv.Atoi(string(f[1]))
}

// ChildrenNamed returns the child processes of pid whose command name
// (/proc/<pid>/comm) is name.
func ChildrenNamed(pid int, name string) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp, err := PPid(p); err != nil || pp != pid {
			continue
		}
		if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p)); err == nil && string(bytes.TrimSpace(comm)) == name {
			out = append(out, p)
		}
	}
	return out
}

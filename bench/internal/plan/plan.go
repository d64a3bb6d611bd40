// Package plan decides how many server and load-generator processes a
// wsbench run needs and how connections are spread over them, from the
// per-process open-files limit (RLIMIT_NOFILE) and the loopback addresses
// available to avoid ephemeral-port exhaustion.
package plan

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// DefaultHeadroom is the number of file descriptors every process keeps free
// for listeners, epoll instances, pipes, the executable and dup()s done while
// a dialled socket is handed to nbio.
const DefaultHeadroom = 1000

// NoFile returns the soft and hard RLIMIT_NOFILE of the calling process.
func NoFile() (soft, hard uint64, err error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, 0, fmt.Errorf("plan: getrlimit: %w", err)
	}
	return rl.Cur, rl.Max, nil
}

// RaiseNoFile raises the soft limit to the hard limit (children inherit it)
// and returns the resulting soft limit. It never lowers the limit.
func RaiseNoFile() (uint64, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, fmt.Errorf("plan: getrlimit: %w", err)
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			return 0, fmt.Errorf("plan: setrlimit: %w", err)
		}
	}
	return rl.Cur, nil
}

// PerProcess is how many connections one process may hold with a given
// open-files limit and headroom; never below 1.
func PerProcess(nofile uint64, headroom int) int {
	n := int64(nofile) - int64(headroom)
	if n < 1 {
		return 1
	}
	if n > 1<<30 {
		return 1 << 30
	}
	return int(n)
}

// Plan is the process layout of one run.
type Plan struct {
	Conns     int     // connections requested
	Servers   int     // server processes
	Clients   int     // load-generator processes
	PerServer []int   // connections each server process receives
	PerClient []int   // connections each client process opens
	Matrix    [][]int // Matrix[client][server]: connections client opens to server
}

// ErrTooFew is returned when an explicit process count cannot hold the
// requested connections under the per-process limit.
var ErrTooFew = errors.New("plan: too few processes for the connection count")

// Make computes a Plan for conns connections with at most perProcess
// connections in any process. servers and clients force the process counts
// when positive; zero means "as few as the limit allows".
func Make(conns, perProcess, servers, clients int) (Plan, error) {
	if conns < 1 {
		return Plan{}, fmt.Errorf("plan: conns must be positive, got %d", conns)
	}
	if perProcess < 1 {
		return Plan{}, fmt.Errorf("plan: perProcess must be positive, got %d", perProcess)
	}
	need := (conns + perProcess - 1) / perProcess
	if servers <= 0 {
		servers = need
	} else if servers < need {
		return Plan{}, fmt.Errorf("%w: %d servers × %d < %d conns", ErrTooFew, servers, perProcess, conns)
	}
	if clients <= 0 {
		clients = need
	} else if clients < need {
		return Plan{}, fmt.Errorf("%w: %d clients × %d < %d conns", ErrTooFew, clients, perProcess, conns)
	}
	p := Plan{
		Conns:     conns,
		Servers:   servers,
		Clients:   clients,
		PerServer: Split(conns, servers),
		PerClient: Split(conns, clients),
	}
	// Every client talks to every server in proportion, so the load on each
	// server is spread over all generators (and their CPU): a largest-
	// remainder split of each client's share by the servers' shares.
	p.Matrix = make([][]int, clients)
	colLeft := append([]int(nil), p.PerServer...)
	for c := range clients {
		p.Matrix[c] = make([]int, servers)
		left := p.PerClient[c]
		if c == clients-1 {
			copy(p.Matrix[c], colLeft)
			break
		}
		row := Split(left, servers)
		for s := range servers {
			// Respect what the server still needs; the remainder goes to
			// servers that still have room.
			take := min(row[s], colLeft[s])
			p.Matrix[c][s] = take
			colLeft[s] -= take
			left -= take
		}
		for s := 0; left > 0 && s < servers; s++ {
			extra := min(left, colLeft[s])
			p.Matrix[c][s] += extra
			colLeft[s] -= extra
			left -= extra
		}
	}
	return p, nil
}

// Split divides n into k parts that differ by at most one, larger first.
func Split(n, k int) []int {
	if k <= 0 {
		return nil
	}
	out := make([]int, k)
	for i := range out {
		out[i] = n / k
		if i < n%k {
			out[i]++
		}
	}
	return out
}

// LoopbackAddrs returns n distinct IPv4 loopback addresses 127.0.0.1 …
// 127.0.0.n, starting at offset+1 (127.0.0.0/8 is routed to lo on Linux, so
// they need no configuration).
func LoopbackAddrs(n, offset int) []string {
	out := make([]string, n)
	for i := range out {
		v := offset + i + 1
		out[i] = fmt.Sprintf("127.%d.%d.%d", (v>>16)&0xff, (v>>8)&0xff, v&0xff)
	}
	return out
}

// AddrsFor returns how many source and destination loopback addresses a
// server holding conns connections needs so that no (source address,
// destination address, destination port) triple carries more than half the
// ephemeral port range: ports are shared between destinations by the
// kernel, so the product is what counts. It returns at least 1 each.
func AddrsFor(conns, portRange int) (src, dst int) {
	if portRange < 2 {
		portRange = 2
	}
	per := portRange / 2
	need := (conns + per - 1) / per
	src, dst = 1, 1
	for src*dst < need {
		if src <= dst {
			src++
		} else {
			dst++
		}
	}
	return src, dst
}

// PortRangeFile is where Linux keeps the ephemeral port range.
const PortRangeFile = "/proc/sys/net/ipv4/ip_local_port_range"

// ReadPortRange parses an ip_local_port_range file.
func ReadPortRange(path string) (lo, hi int, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	return ParsePortRange(string(b))
}

// ParsePortRange parses "lo hi" (tab or space separated).
func ParsePortRange(s string) (lo, hi int, err error) {
	f := strings.Fields(s)
	if len(f) != 2 {
		return 0, 0, fmt.Errorf("plan: port range %q: want two fields", s)
	}
	if lo, err = strconv.Atoi(f[0]); err != nil {
		return 0, 0, fmt.Errorf("plan: port range %q: %w", s, err)
	}
	if hi, err = strconv.Atoi(f[1]); err != nil {
		return 0, 0, fmt.Errorf("plan: port range %q: %w", s, err)
	}
	if lo < 1 || hi > 65535 || lo > hi {
		return 0, 0, fmt.Errorf("plan: port range %q out of bounds", s)
	}
	return lo, hi, nil
}

// WidenPortRange writes lo..hi to path when it is writable and wider than
// what is there, returning the range now in effect and whether it changed.
// A read-only /proc (containers, non-root) is not an error: the current
// range is returned unchanged.
func WidenPortRange(path string, lo, hi int) (curLo, curHi int, changed bool, err error) {
	curLo, curHi, err = ReadPortRange(path)
	if err != nil {
		return 0, 0, false, err
	}
	if curLo <= lo && curHi >= hi {
		return curLo, curHi, false, nil
	}
	if werr := os.WriteFile(path, fmt.Appendf(nil, "%d %d\n", min(lo, curLo), max(hi, curHi)), 0o644); werr != nil {
		return curLo, curHi, false, nil
	}
	nlo, nhi, err := ReadPortRange(path)
	if err != nil {
		return curLo, curHi, false, err
	}
	return nlo, nhi, nlo != curLo || nhi != curHi, nil
}

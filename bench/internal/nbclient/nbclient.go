// Package nbclient opens WebSocket client connections for the benchmark
// load generators and holds them on nbio event loops: a handful of poller
// goroutines for all connections, not one goroutine each.
//
// The HTTP upgrade is done on a blocking socket so that the source address
// can be chosen — several 127.0.0.x sources with IP_BIND_ADDRESS_NO_PORT
// keep 100k loopback connections clear of ephemeral-port exhaustion — and
// the socket is then handed to nbio, with any bytes that arrived after the
// 101 response parsed as WebSocket frames before the event loop takes over.
//
// Handlers run inline on the event loop (no job queued per message), so
// they must not block. Every event loop passes through the Go scheduler at
// least every 2 ms while busy (see Loop), as the gateway's loops do.
//
// This is the dialling half of cmd/wsbench's load generator, shared here so
// that cmd/deskbench speaks the same framing on the same event loops.
package nbclient

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lesismal/nbio"
	"github.com/lesismal/nbio/logging"
	"github.com/lesismal/nbio/nbhttp"
	"github.com/lesismal/nbio/nbhttp/websocket"
)

// ipBindAddressNoPort is IP_BIND_ADDRESS_NO_PORT (Linux ≥ 4.2): bind() picks
// the source address only and connect() picks the port per 4-tuple, so
// ports are shared across destinations.
const ipBindAddressNoPort = 24

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// Config configures a Client.
type Config struct {
	// Name names the nbio engine. Default "nbclient".
	Name string
	// Pollers is the number of nbio event loops. Default Pollers(GOMAXPROCS).
	Pollers int
	// OnMessage receives every data message, on the connection's event
	// loop; data is only valid during the call. Required.
	OnMessage func(c *websocket.Conn, typ websocket.MessageType, data []byte)
	// OnClose is called once per connection when it ends, on its event
	// loop. Optional.
	OnClose func(c *websocket.Conn, err error)
}

// Client dials WebSocket connections onto one nbio engine. Its methods are
// safe for concurrent use.
type Client struct {
	engine *nbhttp.Engine
	opts   *websocket.Options
}

// Pollers is the number of event loops for a process with procs Ps: one
// fewer than the Ps, so that a P stays free for the sender and the runtime
// (an event loop idles inside epoll_wait holding its P; with no idle P, Go's
// sysmon keeps waking every 20µs to take it back).
func Pollers(procs int) int { return max(1, procs-1) }

// New starts the engine.
func New(cfg Config) (*Client, error) {
	if cfg.OnMessage == nil {
		return nil, fmt.Errorf("nbclient: Config.OnMessage is required")
	}
	if cfg.Name == "" {
		cfg.Name = "nbclient"
	}
	if cfg.Pollers <= 0 {
		cfg.Pollers = Pollers(runtime.GOMAXPROCS(0))
	}
	logging.SetLevel(logging.LevelNone)
	engine := nbhttp.NewEngine(nbhttp.Config{
		Name:                    cfg.Name,
		NPoller:                 cfg.Pollers,
		ReleaseWebsocketPayload: true,
	})
	engine.Engine.OnReadBufferFree(newLoopYield(engine.Engine.NPoller).afterRead)
	if err := engine.Start(); err != nil {
		return nil, fmt.Errorf("nbclient: start engine: %w", err)
	}
	opts := websocket.NewOptions()
	opts.Engine = engine
	opts.KeepaliveTime = 0
	opts.OnMessage(cfg.OnMessage)
	if cfg.OnClose != nil {
		opts.OnClose(cfg.OnClose)
	}
	return &Client{engine: engine, opts: opts}, nil
}

// Close stops the engine, closing every connection.
func (c *Client) Close() { c.engine.Stop() }

// Dial is one connection to open.
type Dial struct {
	Dst     string        // host:port of the server
	Src     string        // source IP; "" lets the kernel choose
	Path    string        // request target, with any query (default "/ws")
	Header  http.Header   // extra request headers
	Timeout time.Duration // dial + handshake (default 10s)
	// Session is set on the connection before any message can reach
	// OnMessage.
	Session any
	// Attached, when set, is called with the connection once its session
	// is set, before any frame that came with the 101 response is parsed
	// and before it joins its event loop (so before OnClose can run).
	Attached func(*websocket.Conn)
}

func executeInline(f func()) bool {
	f()
	return true
}

// Dial opens one WebSocket connection and hands it to the event loops.
//
// Frames that arrived together with the 101 response (a server that
// speaks first) are passed to OnMessage inside Dial, before the connection
// is attached to its event loop: a handler must not write on the
// connection until Dial has returned (nbio panics on a write to a
// connection without a loop) — queue such writes and send them after.
func (c *Client) Dial(ctx context.Context, d Dial) (*websocket.Conn, error) {
	if d.Timeout <= 0 {
		d.Timeout = 10 * time.Second
	}
	if d.Path == "" {
		d.Path = "/ws"
	}
	dialer := net.Dialer{Timeout: d.Timeout}
	if d.Src != "" {
		dialer.LocalAddr = &net.TCPAddr{IP: net.ParseIP(d.Src)}
		dialer.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
			})
			if err != nil {
				return err
			}
			return serr
		}
	}
	nc, err := dialer.DialContext(ctx, "tcp", d.Dst)
	if err != nil {
		return nil, err
	}
	_ = nc.SetDeadline(time.Now().Add(d.Timeout))
	var keyRaw [16]byte
	_, _ = rand.Read(keyRaw[:])
	key := base64.StdEncoding.EncodeToString(keyRaw[:])
	req := "GET " + d.Path + " HTTP/1.1\r\nHost: " + d.Dst +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key +
		"\r\nSec-WebSocket-Version: 13\r\n"
	for k, vs := range d.Header {
		for _, v := range vs {
			req += k + ": " + v + "\r\n"
		}
	}
	req += "\r\n"
	if _, err := nc.Write([]byte(req)); err != nil {
		_ = nc.Close()
		return nil, err
	}
	br := bufio.NewReaderSize(nc, 4096)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		_ = nc.Close()
		return nil, err
	}
	_ = resp.Body.Close()
	h := sha1.Sum([]byte(key + wsGUID))
	if resp.StatusCode != http.StatusSwitchingProtocols {
		_ = nc.Close()
		return nil, &HandshakeError{Status: resp.StatusCode}
	}
	if resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(h[:]) {
		_ = nc.Close()
		return nil, ErrBadAccept
	}
	var leftover []byte
	if n := br.Buffered(); n > 0 {
		leftover, _ = br.Peek(n)
		leftover = append([]byte(nil), leftover...)
	}
	_ = nc.SetDeadline(time.Time{})
	nbc, err := nbio.NBConn(nc)
	if err != nil {
		_ = nc.Close()
		return nil, err
	}
	ws := websocket.NewClientConn(c.opts, nbc, "", false, false)
	ws.Engine = c.engine
	ws.Execute = executeInline
	ws.SetSession(d.Session)
	nbc.SetSession(ws)
	nbc.OnData(c.engine.DataHandler)
	if d.Attached != nil {
		d.Attached(ws)
	}
	if len(leftover) > 0 {
		if err := ws.Parse(leftover); err != nil {
			_ = nbc.Close()
			return nil, err
		}
	}
	if _, err := c.engine.AddConn(nbc); err != nil {
		return nil, err
	}
	return ws, nil
}

// ErrBadAccept is an upgrade answered with 101 but a wrong
// Sec-WebSocket-Accept.
var ErrBadAccept = errors.New("nbclient: handshake: bad Sec-WebSocket-Accept")

// HandshakeError is a refused upgrade (e.g. 401 for a bad token).
type HandshakeError struct{ Status int }

func (e *HandshakeError) Error() string {
	return fmt.Sprintf("nbclient: handshake: status %d", e.Status)
}

// loopYield makes every nbio event loop pass through the Go scheduler at
// least every 2ms while it is busy, as the gateway's event loops do: an
// event loop that only ever blocks in epoll_wait keeps the same scheduling
// tick, and Go's sysmon then preempts it every 10ms and takes its P back
// from the system call, which keeps sysmon waking every 20µs.
type loopYield struct {
	last []atomic.Int64 // per event loop (connection Hash modulo loops)
}

const loopYieldEvery = int64(2 * time.Millisecond)

var monoBase = time.Now()

func newLoopYield(loops int) *loopYield {
	return &loopYield{last: make([]atomic.Int64, max(loops, 1))}
}

// afterRead is installed as nbio's OnReadBufferFree, which runs on the
// event loop after each read.
func (y *loopYield) afterRead(c *nbio.Conn, _ *[]byte) {
	s := &y.last[c.Hash()%len(y.last)]
	now := int64(time.Since(monoBase))
	if last := s.Load(); now-last >= loopYieldEvery && s.CompareAndSwap(last, now) {
		runtime.Gosched()
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

func init() { targetFactories["gobwas"] = func() serverTarget { return &gobwasServer{} } }

const (
	gobwasMaxMessage   = 64 << 10 // the gateway's MaxMessageSize
	gobwasWriteTimeout = 15 * time.Second
	gobwasQueue        = 4096 // worker pool queue
)

// gobwasServer is github.com/gobwas/ws the way "A Million WebSockets and
// Go" (Mail.Ru, the library's origin) builds a server for many mostly idle
// connections: a zero-copy upgrade (ws.Upgrade on the accepted net.Conn,
// in a short-lived goroutine), then the socket joins one epoll instance
// (EPOLLONESHOT, golang.org/x/sys/unix) and no goroutine waits on it. One
// poller goroutine hands readable sockets to a small worker pool
// (2×GOMAXPROCS goroutines), which reads what is there into a per-worker
// buffer with one non-blocking read, parses frames with ws.ReadHeaderBuffer
// and ws.Cipher, echoes data frames with one write (header + payload,
// under a per-connection mutex and a 15 s write deadline, as the gateway's
// write timeout), and re-arms the socket. A frame split across reads keeps
// only its own bytes on the connection until the rest arrives. Broadcast
// compiles the frame once (ws.CompileFrame) and spreads the writes over
// the worker pool. Messages above 64 KiB close the connection with 1009.
type gobwasServer struct {
	lns  []net.Listener
	ep   int // epoll instance
	wake int // eventfd that stops the poller
	jobs chan gobwasJob
	wg   sync.WaitGroup // accept loops, poller, workers, upgrades
	once sync.Once

	mu    sync.RWMutex
	conns map[int32]*gobwasConn // by file descriptor
}

// gobwasConn is the whole per-connection state: no buffer while idle.
type gobwasConn struct {
	nc net.Conn
	fd int

	wmu sync.Mutex // serialises writes (echo, broadcast, close)

	// Owned by the worker holding the connection (EPOLLONESHOT: one at a
	// time): the start of a frame not yet complete, and the fragments of
	// a message not yet finished.
	partial []byte
	frag    []byte
	fragOp  ws.OpCode
}

// gobwasJob is a worker's task: read from a readable connection, or write
// a compiled broadcast frame to a slice of connections.
type gobwasJob struct {
	conn  *gobwasConn
	frame []byte
	batch []*gobwasConn
	done  func(sent int)
}

// gobwasWorker is one worker's reusable memory.
type gobwasWorker struct {
	buf  []byte // a whole frame fits: largest header + message
	out  bytes.Buffer
	hdr  [ws.MaxHeaderSize]byte // ReadHeaderBuffer's scratch
	whdr [ws.MaxHeaderSize]byte // WriteHeaderBuffer's scratch
	rd   bytes.Reader
}

func (s *gobwasServer) Start(addrs []string) error {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	wake, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		_ = unix.Close(ep)
		return err
	}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wake)}); err != nil {
		_ = unix.Close(ep)
		_ = unix.Close(wake)
		return err
	}
	s.ep, s.wake = ep, wake
	s.conns = map[int32]*gobwasConn{}
	s.jobs = make(chan gobwasJob, gobwasQueue)
	for _, a := range addrs {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			for _, l := range s.lns {
				_ = l.Close()
			}
			_ = unix.Close(ep)
			_ = unix.Close(wake)
			return err
		}
		s.lns = append(s.lns, ln)
	}
	for range 2 * runtime.GOMAXPROCS(0) {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.worker()
		}()
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.poll()
	}()
	for _, ln := range s.lns {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.acceptLoop(ln)
		}()
	}
	return nil
}

func (s *gobwasServer) acceptLoop(ln net.Listener) {
	for {
		nc, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.upgrade(nc)
		}()
	}
}

// upgrade performs the zero-copy handshake (bounded like the gateway's
// HandshakeTimeout) and registers the socket with the poller.
func (s *gobwasServer) upgrade(nc net.Conn) {
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := ws.Upgrade(nc); err != nil {
		_ = nc.Close()
		return
	}
	_ = nc.SetDeadline(time.Time{})
	sc, ok := nc.(syscall.Conn)
	if !ok {
		_ = nc.Close()
		return
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		_ = nc.Close()
		return
	}
	c := &gobwasConn{nc: nc, fd: -1}
	_ = raw.Control(func(fd uintptr) { c.fd = int(fd) })
	s.mu.Lock()
	s.conns[int32(c.fd)] = c
	s.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(c.fd)}
	if err := unix.EpollCtl(s.ep, unix.EPOLL_CTL_ADD, c.fd, &ev); err != nil {
		s.closeConn(c)
	}
}

// poll waits for readable sockets and queues them for the workers until
// the eventfd is signalled.
func (s *gobwasServer) poll() {
	defer close(s.jobs)
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := unix.EpollWait(s.ep, events, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return
		}
		for _, ev := range events[:n] {
			if ev.Fd == int32(s.wake) {
				return
			}
			s.mu.RLock()
			c := s.conns[ev.Fd]
			s.mu.RUnlock()
			if c != nil {
				s.jobs <- gobwasJob{conn: c}
			}
		}
	}
}

func (s *gobwasServer) worker() {
	w := &gobwasWorker{buf: make([]byte, ws.MaxHeaderSize+gobwasMaxMessage)}
	for j := range s.jobs {
		if j.conn != nil {
			s.read(w, j.conn)
			continue
		}
		sent := 0
		for _, c := range j.batch {
			if c.write(j.frame) == nil {
				sent++
			}
		}
		j.done(sent)
	}
}

// read handles one readiness event of c: one non-blocking read, every
// complete frame in it, then c is re-armed (or closed).
func (s *gobwasServer) read(w *gobwasWorker, c *gobwasConn) {
	n := copy(w.buf, c.partial)
	c.partial = nil
	m, err := unix.Read(c.fd, w.buf[n:])
	switch {
	case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR):
		m = 0
	case err != nil || m == 0: // error or EOF
		s.closeConn(c)
		return
	}
	n += m
	used, keep := s.frames(w, c, w.buf[:n])
	if !keep {
		s.closeConn(c)
		return
	}
	if rest := w.buf[used:n]; len(rest) > 0 {
		c.partial = append([]byte(nil), rest...)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(c.fd)}
	if err := unix.EpollCtl(s.ep, unix.EPOLL_CTL_MOD, c.fd, &ev); err != nil {
		s.closeConn(c)
	}
}

// frames handles the complete frames at the start of b and returns how
// many bytes they took and whether the connection stays open.
func (s *gobwasServer) frames(w *gobwasWorker, c *gobwasConn, b []byte) (used int, keep bool) {
	for used < len(b) {
		w.rd.Reset(b[used:])
		h, err := ws.ReadHeaderBuffer(&w.rd, w.hdr[:0])
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return used, true // header incomplete
		}
		if err != nil || !h.Masked || h.Rsv != 0 {
			c.closeWith(w, ws.StatusProtocolError)
			return used, false
		}
		if h.Length > gobwasMaxMessage {
			c.closeWith(w, ws.StatusMessageTooBig)
			return used, false
		}
		hl := len(b) - used - w.rd.Len()
		if int64(len(b)-used-hl) < h.Length {
			return used, true // payload incomplete
		}
		payload := b[used+hl : used+hl+int(h.Length)]
		used += hl + int(h.Length)
		ws.Cipher(payload, h.Mask, 0)
		if !s.frame(w, c, h, payload) {
			return used, false
		}
	}
	return used, true
}

// frame handles one unmasked frame and reports whether the connection
// stays open.
func (s *gobwasServer) frame(w *gobwasWorker, c *gobwasConn, h ws.Header, payload []byte) bool {
	switch h.OpCode {
	case ws.OpText, ws.OpBinary:
		if c.frag != nil {
			c.closeWith(w, ws.StatusProtocolError)
			return false
		}
		if !h.Fin {
			c.frag, c.fragOp = append([]byte(nil), payload...), h.OpCode
			return true
		}
		return c.send(w, h.OpCode, payload) == nil
	case ws.OpContinuation:
		if c.frag == nil || len(c.frag)+len(payload) > gobwasMaxMessage {
			c.closeWith(w, ws.StatusProtocolError)
			return false
		}
		c.frag = append(c.frag, payload...)
		if !h.Fin {
			return true
		}
		msg, op := c.frag, c.fragOp
		c.frag = nil
		return c.send(w, op, msg) == nil
	case ws.OpPing:
		return c.send(w, ws.OpPong, payload) == nil
	case ws.OpPong:
		return true
	case ws.OpClose:
		code := ws.StatusNormalClosure
		if len(payload) >= 2 {
			code = ws.StatusCode(binary.BigEndian.Uint16(payload))
		}
		c.closeWith(w, code)
		return false
	default:
		c.closeWith(w, ws.StatusProtocolError)
		return false
	}
}

// send writes one unmasked frame with one write.
func (c *gobwasConn) send(w *gobwasWorker, op ws.OpCode, payload []byte) error {
	w.out.Reset()
	h := ws.Header{Fin: true, OpCode: op, Length: int64(len(payload))}
	if err := ws.WriteHeaderBuffer(&w.out, h, w.whdr[:]); err != nil {
		return err
	}
	w.out.Write(payload)
	return c.write(w.out.Bytes())
}

// closeWith sends a close frame with code (errors ignored: the connection
// is closed next).
func (c *gobwasConn) closeWith(w *gobwasWorker, code ws.StatusCode) {
	_ = c.send(w, ws.OpClose, ws.NewCloseFrameBody(code, ""))
}

func (c *gobwasConn) write(frame []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.nc.SetWriteDeadline(time.Now().Add(gobwasWriteTimeout))
	_, err := c.nc.Write(frame)
	return err
}

// closeConn forgets c and closes its socket, which also removes it from
// the epoll instance. It is called by the only goroutine holding c.
func (s *gobwasServer) closeConn(c *gobwasConn) {
	s.mu.Lock()
	if s.conns[int32(c.fd)] == c {
		delete(s.conns, int32(c.fd))
	}
	s.mu.Unlock()
	_ = c.nc.Close()
}

func (s *gobwasServer) Addrs() []string {
	out := make([]string, len(s.lns))
	for i, ln := range s.lns {
		out[i] = ln.Addr().String()
	}
	return out
}

func (s *gobwasServer) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.conns)
}

func (s *gobwasServer) snapshot() []*gobwasConn {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*gobwasConn, 0, len(s.conns))
	for _, c := range s.conns {
		out = append(out, c)
	}
	return out
}

// Broadcast compiles the frame once and has the workers write it, a batch
// of connections per job, and returns when every write was issued.
func (s *gobwasServer) Broadcast(payload []byte) (int, error) {
	frame, err := ws.CompileFrame(ws.NewTextFrame(payload))
	if err != nil {
		return 0, err
	}
	conns := s.snapshot()
	const batch = 256
	var mu sync.Mutex
	var wg sync.WaitGroup
	total := 0
	for i := 0; i < len(conns); i += batch {
		wg.Add(1)
		s.jobs <- gobwasJob{frame: frame, batch: conns[i:min(i+batch, len(conns))], done: func(sent int) {
			mu.Lock()
			total += sent
			mu.Unlock()
			wg.Done()
		}}
	}
	wg.Wait()
	return total, nil
}

// Shutdown stops accepting, stops the poller and workers, then sends every
// connection a close frame (1001) and closes it.
func (s *gobwasServer) Shutdown(ctx context.Context) error {
	s.once.Do(func() {
		if s.jobs == nil {
			return
		}
		for _, ln := range s.lns {
			_ = ln.Close()
		}
		var one [8]byte
		one[7] = 1 // eventfd counters are host-endian; any non-zero value wakes
		_, _ = unix.Write(s.wake, one[:])
		done := make(chan struct{})
		go func() {
			s.wg.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-ctx.Done():
		}
		closeFrame := ws.MustCompileFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusGoingAway, "shutdown")))
		for _, c := range s.snapshot() {
			_ = c.write(closeFrame)
			s.closeConn(c)
		}
		_ = unix.Close(s.ep)
		_ = unix.Close(s.wake)
	})
	return ctx.Err()
}

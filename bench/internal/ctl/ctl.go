// Package ctl is how the wsbench coordinator drives its child processes: a
// child is the same binary re-executed in a role, and the two talk in JSON
// lines over the child's stdin (requests) and stdout (responses and
// events). The child's stderr is passed through for progress and errors.
//
// Cleanup is layered so that no child outlives the coordinator: Group.Close
// kills every child it started (SIGKILL to the child's process group);
// children are started with Pdeathsig=SIGKILL so the kernel kills them if the
// coordinator dies without running Close; and Serve returns when stdin
// reaches EOF, which a child treats as "exit now".
package ctl

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Request is one command sent to a child.
type Request struct {
	ID   uint64          `json:"id"`
	Cmd  string          `json:"cmd"`
	Args json.RawMessage `json:"args,omitempty"`
}

// Response is a reply to a Request (ID != 0) or an unsolicited event
// (ID == 0, Event set).
type Response struct {
	ID    uint64          `json:"id,omitempty"`
	Event string          `json:"event,omitempty"`
	Error string          `json:"error,omitempty"`
	Data  json.RawMessage `json:"data,omitempty"`
}

// ErrChildExited is returned by Call when the child's stdout closes before
// the reply arrives.
var ErrChildExited = errors.New("ctl: child exited")

// Child is a running child process. Its methods are safe for concurrent use.
type Child struct {
	Name string
	cmd  *exec.Cmd
	in   io.WriteCloser

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan Response
	dead    bool
	events  chan Response
	done    chan struct{}
	waitErr error
}

// Group owns a set of children and kills them all on Close.
type Group struct {
	mu       sync.Mutex
	children []*Child
}

// Start launches path with args as a child named name. stderr receives the
// child's stderr (nil discards it). The child gets Pdeathsig=SIGKILL and its
// own process group.
func (g *Group) Start(name, path string, args []string, env []string, stderr io.Writer) (*Child, error) {
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = stderr
	cmd.SysProcAttr = sysProcAttr()
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("ctl: %s: %w", name, err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("ctl: %s: %w", name, err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("ctl: start %s: %w", name, err)
	}
	c := &Child{
		Name:    name,
		cmd:     cmd,
		in:      in,
		pending: map[uint64]chan Response{},
		events:  make(chan Response, 1024),
		done:    make(chan struct{}),
	}
	g.mu.Lock()
	g.children = append(g.children, c)
	g.mu.Unlock()
	go c.readLoop(out)
	return c, nil
}

// Children returns the children started so far.
func (g *Group) Children() []*Child {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]*Child(nil), g.children...)
}

// Close kills every child still running (SIGKILL to its process group) and
// waits for all of them. It is idempotent.
func (g *Group) Close() {
	g.mu.Lock()
	cs := g.children
	g.children = nil
	g.mu.Unlock()
	for _, c := range cs {
		c.Kill()
	}
	for _, c := range cs {
		<-c.done
	}
}

// CloseInput closes the child's stdin; a child running Serve treats that as
// "exit now".
func (c *Child) CloseInput() error { return c.in.Close() }

// Pid returns the child's process ID.
func (c *Child) Pid() int { return c.cmd.Process.Pid }

// Done is closed when the child has exited and its output is drained.
func (c *Child) Done() <-chan struct{} { return c.done }

// Err returns the child's exit error once Done is closed.
func (c *Child) Err() error {
	<-c.done
	return c.waitErr
}

// Events delivers unsolicited events; it is closed when the child exits.
// Events that the reader does not consume are dropped once 1024 are queued.
func (c *Child) Events() <-chan Response { return c.events }

// Kill sends SIGKILL to the child's process group (and the child itself).
func (c *Child) Kill() {
	if c.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
	_ = c.cmd.Process.Kill()
}

func (c *Child) readLoop(out io.Reader) {
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		var r Response
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			// Not ours (a stray print); pass it through to stderr.
			fmt.Fprintf(os.Stderr, "[%s] %s\n", c.Name, sc.Bytes())
			continue
		}
		if r.ID == 0 {
			select {
			case c.events <- r:
			default:
			}
			continue
		}
		c.mu.Lock()
		ch := c.pending[r.ID]
		delete(c.pending, r.ID)
		c.mu.Unlock()
		if ch != nil {
			ch <- r
		}
	}
	_ = c.in.Close()
	c.waitErr = c.cmd.Wait()
	c.mu.Lock()
	c.dead = true
	for id, ch := range c.pending {
		delete(c.pending, id)
		close(ch)
	}
	c.mu.Unlock()
	close(c.events)
	close(c.done)
}

// Call sends cmd with args (JSON-encoded; nil for none) and decodes the
// reply's data into out (nil to ignore). It blocks until the reply, the
// child's exit, or ctx ends.
func (c *Child) Call(ctx context.Context, cmd string, args, out any) error {
	var raw json.RawMessage
	if args != nil {
		b, err := json.Marshal(args)
		if err != nil {
			return fmt.Errorf("ctl: %s %s: %w", c.Name, cmd, err)
		}
		raw = b
	}
	ch := make(chan Response, 1)
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return fmt.Errorf("ctl: %s %s: %w", c.Name, cmd, ErrChildExited)
	}
	c.nextID++
	id := c.nextID
	c.pending[id] = ch
	line, err := json.Marshal(Request{ID: id, Cmd: cmd, Args: raw})
	if err == nil {
		_, err = c.in.Write(append(line, '\n'))
	}
	c.mu.Unlock()
	if err != nil {
		c.forget(id)
		return fmt.Errorf("ctl: %s %s: %w", c.Name, cmd, err)
	}
	select {
	case r, ok := <-ch:
		if !ok {
			return fmt.Errorf("ctl: %s %s: %w", c.Name, cmd, ErrChildExited)
		}
		if r.Error != "" {
			return fmt.Errorf("ctl: %s %s: %s", c.Name, cmd, r.Error)
		}
		if out != nil && len(r.Data) > 0 {
			if err := json.Unmarshal(r.Data, out); err != nil {
				return fmt.Errorf("ctl: %s %s: decode reply: %w", c.Name, cmd, err)
			}
		}
		return nil
	case <-ctx.Done():
		c.forget(id)
		return fmt.Errorf("ctl: %s %s: %w", c.Name, cmd, ctx.Err())
	}
}

func (c *Child) forget(id uint64) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

// WaitEvent returns the next event named name, skipping others, or an error
// when the child exits or ctx ends.
func (c *Child) WaitEvent(ctx context.Context, name string) (Response, error) {
	for {
		select {
		case r, ok := <-c.events:
			if !ok {
				return Response{}, fmt.Errorf("ctl: %s waiting for %q: %w (%v)", c.Name, name, ErrChildExited, c.waitErr)
			}
			if r.Event == name {
				if r.Error != "" {
					return r, fmt.Errorf("ctl: %s: %s", c.Name, r.Error)
				}
				return r, nil
			}
		case <-ctx.Done():
			return Response{}, fmt.Errorf("ctl: %s waiting for %q: %w", c.Name, name, ctx.Err())
		}
	}
}

// Handler serves one request inside a child; the returned value is
// JSON-encoded into the reply's data.
type Handler func(ctx context.Context, cmd string, args json.RawMessage) (any, error)

// Server is the child side: it reads requests from in, runs each in its own
// goroutine and writes replies and events to out, one JSON line each.
type Server struct {
	mu  sync.Mutex
	out io.Writer
}

// NewServer returns a Server writing to out.
func NewServer(out io.Writer) *Server { return &Server{out: out} }

// Emit writes an event line; it is safe for concurrent use.
func (s *Server) Emit(event string, data any) {
	r := Response{Event: event}
	if data != nil {
		b, err := json.Marshal(data)
		if err != nil {
			r.Error = err.Error()
		} else {
			r.Data = b
		}
	}
	s.write(r)
}

// EmitError writes an event line carrying an error.
func (s *Server) EmitError(event string, err error) {
	s.write(Response{Event: event, Error: err.Error()})
}

func (s *Server) write(r Response) {
	b, err := json.Marshal(r)
	if err != nil {
		b, _ = json.Marshal(Response{ID: r.ID, Event: r.Event, Error: err.Error()})
	}
	s.mu.Lock()
	_, _ = s.out.Write(append(b, '\n'))
	s.mu.Unlock()
}

// Serve reads requests from in until EOF or ctx ends, dispatching each to h
// in its own goroutine, and waits for the handlers before returning. EOF on
// in means the coordinator is gone: the caller should exit.
func (s *Server) Serve(ctx context.Context, in io.Reader, h Handler) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	lines := make(chan []byte)
	readErr := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(in)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			line := append([]byte(nil), sc.Bytes()...)
			select {
			case lines <- line:
			case <-ctx.Done():
				readErr <- ctx.Err()
				return
			}
		}
		readErr <- sc.Err()
	}()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-readErr:
			if err == nil {
				err = io.EOF
			}
			return err
		case line := <-lines:
			var req Request
			if err := json.Unmarshal(line, &req); err != nil {
				s.write(Response{Event: "error", Error: fmt.Sprintf("bad request: %v", err)})
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				v, err := h(ctx, req.Cmd, req.Args)
				r := Response{ID: req.ID}
				if err != nil {
					r.Error = err.Error()
				} else if v != nil {
					b, merr := json.Marshal(v)
					if merr != nil {
						r.Error = merr.Error()
					} else {
						r.Data = b
					}
				}
				s.write(r)
			}()
		}
	}
}

// Alive reports whether a process with pid exists (signal 0 succeeds).
func Alive(pid int) bool {
	return syscall.Kill(pid, 0) == nil
}

// WaitGone polls until pid no longer exists or timeout passes; it reports
// whether the process is gone. Zombies (exited, not yet reaped) count as gone.
func WaitGone(pid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		if !Alive(pid) || isZombie(pid) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// Field 3 follows the parenthesised command name.
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == ')' {
			if i+2 < len(b) {
				return b[i+2] == 'Z' || b[i+2] == 'X'
			}
			return false
		}
	}
	return false
}

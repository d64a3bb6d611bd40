// Package logw holds the log plumbing shared by the benchmark
// coordinators: a writer that serialises writes from many goroutines, and
// one that prefixes every line of a child process's output with its name.
package logw

import (
	"bytes"
	"io"
	"sync"
)

// LockedWriter serialises writes to W (from the coordinator's goroutines
// and the children's stderr copiers); holding its lock keeps writers out.
type LockedWriter struct {
	sync.Mutex
	W io.Writer
}

// Locked returns a LockedWriter around w.
func Locked(w io.Writer) *LockedWriter { return &LockedWriter{W: w} }

func (l *LockedWriter) Write(p []byte) (int, error) {
	l.Lock()
	defer l.Unlock()
	return l.W.Write(p)
}

// Prefix returns a writer that prefixes every line written to w (a
// child's stderr) and writes whole lines only.
func Prefix(w io.Writer, prefix string) io.Writer {
	return &linePrefixer{w: w, prefix: prefix}
}

type linePrefixer struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
	buf    []byte
}

func (l *linePrefixer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		line := append([]byte(l.prefix), l.buf[:i+1]...)
		if _, err := l.w.Write(line); err != nil {
			return len(p), err
		}
		l.buf = l.buf[i+1:]
	}
	return len(p), nil
}

package gateway

import (
	"encoding/binary"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	llibtls "github.com/lesismal/llib/std/crypto/tls"
	"github.com/lesismal/nbio"
	"github.com/lesismal/nbio/nbhttp/websocket"
)

// maxPendingControl is how many pings and pongs of one connection may wait
// for their handler job; more are dropped unanswered, as RFC 6455 §5.5.3
// allows (an endpoint may answer only the most recent ping). It keeps a
// ping flood from piling handler jobs (and their pongs) up in memory.
const maxPendingControl = 8

// Guard modes.
const (
	guardScan    uint8 = iota // checking every frame
	guardDiscard              // the guard closed the connection: drop all but the peer's close frame
	guardPass                 // the peer's close frame arrived after a discard: hand everything on
)

// frameGuard sits between nbio's read path and its WebSocket parser for
// every upgraded connection. nbio hands frames to handlers only once they
// are parsed and ignores some entirely (empty continuation frames, the
// mask bit), so the guard reads each frame header itself as the bytes
// arrive, on the event loop, and decides what nbio gets to parse:
//
//   - an unmasked client frame closes the connection with 1002 (RFC 6455 §5.1);
//   - every frame takes a token of Config.RateLimit (see RateLimit);
//   - a data message split into more than Config.MaxFragments frames closes
//     the connection with 1009;
//   - pings and pongs beyond maxPendingControl waiting jobs are dropped.
//
// A frame is handed on or dropped whole: the bytes given to nbio always end
// on a frame boundary or inside a payload, never inside a header, so nbio's
// parser never sees a partial frame of a dropped one. Closes are queued on
// the connection's job list, behind the jobs of the frames before, so
// messages received before a violation are still delivered.
//
// The guard is created on the event loop by Gateway.onData on the first
// read after the upgrade and replaces the *websocket.Conn as the nbio
// connection's session (it implements nbhttp.ParserCloser), so nbhttp's
// read paths, plain and TLS, call Parse with the (decrypted) bytes. Its
// scanner fields are only touched by that event loop.
type frameGuard struct {
	g   *Gateway
	ws  *websocket.Conn
	tls bool // nbhttp's TLS read path decrypts and calls Parse

	mode     uint8
	hdrN     uint8    // header bytes held back in hdr (a header split across reads)
	skip     bool     // the frame whose payload is being read is dropped
	dropMsg  bool     // the data message in progress is dropped (RateDrop)
	hdr      [14]byte // longest client frame header: 2 + 8 (length) + 4 (mask)
	remain   uint64   // payload bytes of the current frame still to come
	frags    int      // frames of the data message in progress; 0: none
	tokens   float64
	tokensAt int64
	lastDrop *dropJob // the queued OnDrop job that later drops may join

	refuseCode   int // close code of a refused frame, for queueClose
	refuseReason string

	pendingCtl atomic.Int32 // pings and pongs handed to nbio whose handler has not run
}

// dropJob calls RateLimit.OnDrop n times on the connection's job list;
// consecutive drops share one job (n < 0 once it ran).
type dropJob struct {
	n atomic.Int32
}

func (g *Gateway) newFrameGuard(ws *websocket.Conn) *frameGuard {
	w, _ := unwrapConn(ws.Conn)
	_, isTLS := w.(*llibtls.Conn)
	return &frameGuard{g: g, ws: ws, tls: isTLS}
}

// onData is the engine's data callback (it replaces nbio's default, which
// only calls the connection's own handler): it puts a frameGuard in front of
// every upgraded connection, the plain and TLS ones of the own listeners
// and the mounted ones alike.
func (g *Gateway) onData(nc *nbio.Conn, data []byte) {
	fg, ok := nc.Session().(*frameGuard)
	if !ok {
		ws, isWS := nc.Session().(*websocket.Conn)
		if !isWS {
			nc.DataHandler()(nc, data) // HTTP: nbhttp's request parser
			return
		}
		fg = g.newFrameGuard(ws)
		nc.SetSession(fg)
	}
	if fg.tls {
		nc.DataHandler()(nc, data) // nbhttp decrypts, then calls fg.Parse
		return
	}
	defer func() {
		if v := recover(); v != nil {
			g.cfg.Observer.Logger().Error("gateway: frame guard panicked", "panic", fmt.Sprint(v))
			_ = nc.Close()
		}
	}()
	if err := fg.Parse(data); err != nil {
		_ = nc.CloseWithError(err)
	}
}

// UnderlayerConn implements nbhttp.ParserCloser.
func (fg *frameGuard) UnderlayerConn() net.Conn { return fg.ws.UnderlayerConn() }

// CloseAndClean implements nbhttp.ParserCloser.
func (fg *frameGuard) CloseAndClean(err error) { fg.ws.CloseAndClean(err) }

// Parse implements nbhttp.ParserCloser: it scans data and hands nbio's
// parser the frames it admits. It allocates nothing unless it drops or
// refuses a frame.
func (fg *frameGuard) Parse(data []byte) error {
	if fg.mode == guardPass {
		return fg.ws.Parse(data)
	}
	if fg.g.cfg.RateLimit.PerSecond > 0 {
		fg.refill()
	}
	// data[from:i] is handed on when passing; a run starts at the header
	// of an admitted frame and ends at the header of a dropped one.
	from, passing := 0, fg.remain > 0 && !fg.skip
	held := int(fg.hdrN) // header bytes of an earlier read, not handed on yet
	i := 0
	for i < len(data) {
		if fg.remain > 0 {
			n := fg.remain
			if left := uint64(len(data) - i); n > left {
				n = left
			}
			i += int(n)
			fg.remain -= n
			continue
		}
		hs := i // where this frame's header starts in data (0 if it began earlier)
		k := int(fg.hdrN)
		for {
			want := 2
			if k >= 2 {
				want = clientHeaderLen(fg.hdr[1])
			}
			if k >= want {
				break
			}
			if i == len(data) {
				// The header continues in the next read: hold it back.
				fg.hdrN = uint8(k)
				if passing {
					return fg.ws.Parse(data[from:hs])
				}
				return nil
			}
			fg.hdr[k] = data[i]
			k++
			i++
		}
		fg.hdrN = 0
		fg.remain = payloadLen(fg.hdr[:k])
		v := fg.frame(fg.hdr[0], fg.hdr[1])
		if v == verdictPass && fg.mode == guardPass {
			// The peer's close frame after a discard: nbio gets the rest.
			if err := fg.handOnHeld(held, hs); err != nil {
				return err
			}
			fg.remain = 0
			return fg.ws.Parse(data[hs:])
		}
		if v == verdictPass {
			if !passing {
				if err := fg.handOnHeld(held, hs); err != nil {
					return err
				}
				from, passing = hs, true
			}
		} else if passing {
			if err := fg.ws.Parse(data[from:hs]); err != nil {
				return err
			}
			passing = false
		}
		// Jobs for a refused or dropped frame go behind those of the
		// frames handed on before it.
		switch v {
		case verdictRefuse:
			fg.queueClose()
		case verdictDropped:
			fg.dropped()
		}
		held = 0
		fg.skip = v != verdictPass
	}
	if passing && from < len(data) {
		return fg.ws.Parse(data[from:])
	}
	return nil
}

// handOnHeld hands nbio the header bytes held back from an earlier read,
// when the frame they start is admitted at the start of this read.
func (fg *frameGuard) handOnHeld(held, hs int) error {
	if held > 0 && hs == 0 {
		return fg.ws.Parse(fg.hdr[:held])
	}
	return nil
}

// clientHeaderLen is the length of a frame header given its second byte.
func clientHeaderLen(b1 byte) int {
	n := 2
	switch b1 & 0x7F {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if b1&0x80 != 0 {
		n += 4
	}
	return n
}

func payloadLen(h []byte) uint64 {
	switch n := h[1] & 0x7F; n {
	case 126:
		return uint64(binary.BigEndian.Uint16(h[2:4]))
	case 127:
		return binary.BigEndian.Uint64(h[2:10])
	default:
		return uint64(n)
	}
}

type verdict uint8

const (
	verdictPass    verdict = iota
	verdictDrop            // dropped silently
	verdictDropped         // a data message dropped by RateDrop: OnDrop
	verdictRefuse          // the connection is closed with refuseCode
)

const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xA
)

// frame decides the fate of one frame from its first two header bytes.
func (fg *frameGuard) frame(b0, b1 byte) verdict {
	op := b0 & 0x0F
	if fg.mode == guardDiscard {
		if op == opClose {
			fg.mode = guardPass
			return verdictPass
		}
		return verdictDrop
	}
	if b1&0x80 == 0 {
		return fg.refuse(CloseProtocolError, "unmasked frame")
	}
	fin := b0&0x80 != 0
	rl := &fg.g.cfg.RateLimit
	switch op {
	case opText, opBinary:
		fg.frags, fg.dropMsg = 1, false
		if fin {
			fg.frags = 0
		}
		if !fg.take() {
			if rl.Policy == RateClose {
				return fg.refuse(ClosePolicyViolation, "rate limit exceeded")
			}
			fg.dropMsg = !fin
			return verdictDropped
		}
		fg.lastDrop = nil
		return verdictPass
	case opContinuation:
		if fg.frags == 0 {
			fg.take()
			return verdictPass // not in a message: nbio closes with 1002
		}
		fg.frags++
		if max := fg.g.cfg.MaxFragments; max > 0 && fg.frags > max {
			return fg.refuse(CloseMessageTooBig, "too many fragments")
		}
		drop := fg.dropMsg
		if fin {
			fg.frags, fg.dropMsg = 0, false
		}
		if drop {
			return verdictDrop
		}
		if !fg.take() {
			if rl.Policy == RateClose {
				return fg.refuse(ClosePolicyViolation, "rate limit exceeded")
			}
			fg.tokens-- // never split an admitted message: borrow
		}
		return verdictPass
	case opPing, opPong:
		if !fg.take() {
			if rl.Policy == RateClose {
				return fg.refuse(ClosePolicyViolation, "rate limit exceeded")
			}
			if m := fg.g.m; m != nil {
				m.rateDrop.Inc()
			}
			return verdictDrop
		}
		if fg.pendingCtl.Load() >= maxPendingControl {
			return verdictDrop
		}
		fg.pendingCtl.Add(1)
		return verdictPass
	}
	// A close frame is counted but never refused: it ends the connection.
	// Reserved opcodes are counted and left to nbio, which closes with 1002.
	fg.take()
	return verdictPass
}

// controlDone is called by the ping and pong handlers.
func (fg *frameGuard) controlDone() { fg.pendingCtl.Add(-1) }

// refill adds the tokens earned since the last read.
func (fg *frameGuard) refill() {
	rl := &fg.g.cfg.RateLimit
	now := time.Now().UnixNano()
	burst := float64(rl.Burst)
	if fg.tokensAt == 0 {
		fg.tokens, fg.tokensAt = burst, now
		return
	}
	if el := now - fg.tokensAt; el > 0 {
		fg.tokens = min(burst, fg.tokens+float64(el)/1e9*rl.PerSecond)
		fg.tokensAt = now
	}
}

// take takes a token; it always succeeds without a rate limit.
func (fg *frameGuard) take() bool {
	if fg.g.cfg.RateLimit.PerSecond <= 0 {
		return true
	}
	if fg.tokens < 1 {
		return false
	}
	fg.tokens--
	return true
}

// refuse stops handing frames on; Parse then calls queueClose.
func (fg *frameGuard) refuse(code int, reason string) verdict {
	fg.mode = guardDiscard
	fg.refuseCode, fg.refuseReason = code, reason
	return verdictRefuse
}

// queueClose closes the connection with the refusal's code once the jobs
// of the frames before have run. The peer's frames are discarded until its
// close frame; Conn.closeWith arms Config.CloseGracePeriod.
func (fg *frameGuard) queueClose() {
	code, reason := fg.refuseCode, fg.refuseReason
	if m := fg.g.m; m != nil && code == ClosePolicyViolation {
		m.rateClose.Inc()
	}
	ws := fg.ws
	ws.Execute(func() {
		if c := connOf(ws); c != nil {
			c.waitOpen()
			c.closeWith(code, reason, false)
		}
	})
}

// dropped reports a data message dropped by RateDrop: it counts it and
// queues OnDrop on the connection's job list, in order with OnMessage.
// Consecutive drops share one job, so a flood queues at most one job per
// admitted message.
func (fg *frameGuard) dropped() {
	if m := fg.g.m; m != nil {
		m.rateDrop.Inc()
	}
	onDrop := fg.g.cfg.RateLimit.OnDrop
	if onDrop == nil {
		return
	}
	if j := fg.lastDrop; j != nil {
		for n := j.n.Load(); n > 0; n = j.n.Load() {
			if j.n.CompareAndSwap(n, n+1) {
				return
			}
		}
	}
	j := &dropJob{}
	j.n.Store(1)
	fg.lastDrop = j
	ws, g := fg.ws, fg.g
	ws.Execute(func() {
		c := connOf(ws)
		n := j.n.Swap(-1)
		if c == nil {
			return
		}
		c.waitOpen()
		for range n {
			if c.state.Load() != stateOpen {
				return
			}
			g.guard(c, "drop", func() { onDrop(c) })
		}
	})
}

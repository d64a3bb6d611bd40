package gateway

import (
	"errors"
	"time"
	"unicode/utf8"
)

// PreparedMessage is a data message whose WebSocket frame is encoded once
// and written as-is to any number of connections: server frames are
// unmasked, so the bytes are the same for every connection. It is immutable
// and safe for concurrent use.
type PreparedMessage struct {
	typ   MessageType
	frame []byte
	n     int
}

// ErrInvalidUTF8 is returned by NewPreparedMessage for a text message that is
// not valid UTF-8 (peers would close with 1007).
var ErrInvalidUTF8 = errors.New("gateway: text message is not valid UTF-8")

// NewPreparedMessage encodes data as one final frame of type typ. The data
// is copied; the caller may reuse it.
func NewPreparedMessage(typ MessageType, data []byte) (*PreparedMessage, error) {
	if typ != TextMessage && typ != BinaryMessage {
		return nil, ErrMessageType
	}
	if typ == TextMessage && !utf8.Valid(data) {
		return nil, ErrInvalidUTF8
	}
	frame := make([]byte, frameHeaderLen(len(data))+len(data))
	h := putFrameHeader(frame, byte(typ), len(data))
	copy(frame[h:], data)
	return &PreparedMessage{typ: typ, frame: frame, n: len(data)}, nil
}

// Type returns the message type.
func (pm *PreparedMessage) Type() MessageType { return pm.typ }

// Len returns the payload length.
func (pm *PreparedMessage) Len() int { return pm.n }

// FrameLen returns the encoded frame length (header included).
func (pm *PreparedMessage) FrameLen() int { return len(pm.frame) }

// Broadcast writes pm to every connection in conns, or to every open
// connection of the gateway when conns is nil, and returns how many
// connections accepted it. It never blocks on a connection and does not
// allocate per connection; connections whose outgoing buffer would exceed
// Config.MaxOutgoingBytes are closed with CloseSlowConsumer and not counted.
// Safe for concurrent use.
func (g *Gateway) Broadcast(pm *PreparedMessage, conns []*Conn) (sent int) {
	var start time.Time
	if g.m != nil {
		start = time.Now()
	}
	if conns != nil {
		for _, c := range conns {
			if c != nil && c.SendPrepared(pm) == nil {
				sent++
			}
		}
	} else {
		sent = g.broadcastAll(pm)
	}
	if g.m != nil {
		g.m.broadcast.Observe(time.Since(start).Seconds())
	}
	return sent
}

// broadcastAll writes under the registry's read locks (writes never call
// back into the host), and closes slow consumers after releasing them.
func (g *Gateway) broadcastAll(pm *PreparedMessage) (sent int) {
	var slow []*Conn
	for i := range g.reg.ids {
		s := &g.reg.ids[i]
		s.mu.RLock()
		for _, c := range s.m {
			if c.state.Load() != stateOpen {
				continue
			}
			switch c.write(pm.frame, true) {
			case nil:
				sent++
			case errSlow:
				slow = append(slow, c)
			}
		}
		s.mu.RUnlock()
	}
	for _, c := range slow {
		c.fail(CloseSlowConsumer, "slow consumer")
	}
	return sent
}

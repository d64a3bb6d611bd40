package main

import (
	"bytes"
	"slices"
	"strconv"
)

// A wire protocol is how the load generators carry the benchmark payload
// (payload.go) over a target's WebSocket connections. Most targets echo raw
// WebSocket messages; a target that only speaks a protocol of its own
// registers it in targetProtocols, and the coordinator tells the load
// generators which one to speak.
const (
	// protoRaw: the payload is the whole WebSocket text message, and the
	// echo reply is the same message.
	protoRaw = ""
	// protoCentrifuge is Centrifuge's JSON client protocol (one JSON object
	// per line, several lines per frame allowed). After the WebSocket
	// handshake the client sends a connect command and waits for its reply;
	// the server subscribes the connection to one channel server-side. Echo
	// is an RPC whose data is the payload as a JSON string — the server's
	// OnRPC returns the same data — and broadcast is a publication on that
	// channel. The server's protocol pings ({}) are answered with a pong
	// ({}), as Centrifuge's client SDKs do.
	protoCentrifuge = "centrifuge-json"
)

// targetProtocols maps a -target name to the wire protocol its load
// generators speak; targets missing from it use protoRaw. Targets register
// themselves from their own files, as in targetFactories.
var targetProtocols = map[string]string{}

// centrifugeConnectCmd is the connect command sent right after the
// WebSocket handshake (id 1; echo RPCs use ids from 2 up).
var centrifugeConnectCmd = []byte(`{"id":1,"connect":{}}`)

var (
	centrifugeData    = []byte(`"data":"`)
	centrifugeConnect = []byte(`"connect":`)
	centrifugePing    = []byte(`{}`)
)

// appendEchoMessage appends to dst the WebSocket message that carries one
// echo payload of size bytes (timestamp ts, sequence seq; see putPayload)
// in proto. It allocates only when dst lacks the capacity.
func appendEchoMessage(dst []byte, proto string, size int, ts int64, seq uint32) []byte {
	if proto == protoCentrifuge {
		dst = append(dst, `{"id":`...)
		dst = strconv.AppendUint(dst, uint64(seq)+2, 10)
		dst = append(dst, `,"rpc":{"data":"`...)
	}
	off := len(dst)
	dst = slices.Grow(dst, size)[:off+size]
	putPayload(dst[off:], kindEcho, ts, seq)
	if proto == protoCentrifuge {
		dst = append(dst, `"}}`...)
	}
	return dst
}

// centrifugeFrame is what one line of a Centrifuge JSON frame is to the
// load generator.
type centrifugeFrame int

const (
	cfOther   centrifugeFrame = iota // a reply the harness did not ask for
	cfPayload                        // a reply or push carrying a payload
	cfPing                           // the server's protocol ping
	cfConnect                        // the reply to the connect command
)

// splitCentrifuge calls f for every line of a Centrifuge JSON frame, with
// what the line is and, for cfPayload, the benchmark payload inside it
// (the payload's JSON string, up to the end of the line; parsePayload only
// reads its header).
func splitCentrifuge(frame []byte, f func(kind centrifugeFrame, payload []byte)) {
	for len(frame) > 0 {
		line := frame
		if i := bytes.IndexByte(frame, '\n'); i >= 0 {
			line, frame = frame[:i], frame[i+1:]
		} else {
			frame = nil
		}
		switch {
		case len(line) == 0:
		case bytes.Equal(line, centrifugePing):
			f(cfPing, nil)
		case bytes.Contains(line, centrifugeConnect):
			f(cfConnect, nil)
		default:
			if i := bytes.Index(line, centrifugeData); i >= 0 {
				f(cfPayload, line[i+len(centrifugeData):])
			} else {
				f(cfOther, line)
			}
		}
	}
}

package main

import (
	"errors"
	"strconv"
)

// Wire format of every benchmark message (ASCII, so text frames are valid
// UTF-8 for any server that checks):
//
//	[0]      kind: 'E' echo, 'B' broadcast
//	[1]      ' '
//	[2:21]   sender's time.Now().UnixNano(), 19 zero-padded digits
//	[21]     ' '
//	[22:32]  sequence number, 10 zero-padded digits
//	[32]     ' '
//	[33:]    'x' padding up to the requested size
//
// All processes run on one machine, so a wall-clock timestamp taken by the
// sender and compared with time.Now() by the receiver measures the one-way
// (broadcast) or round-trip (echo) latency.
const (
	kindEcho      = 'E'
	kindBroadcast = 'B'
	headerLen     = 33
)

var errShortPayload = errors.New("wsbench: payload shorter than its header")

// putPayload writes a message of kind with timestamp ts and sequence seq
// into buf (len(buf) is the message size, at least headerLen).
func putPayload(buf []byte, kind byte, ts int64, seq uint32) {
	buf[0] = kind
	buf[1] = ' '
	putDigits(buf[2:21], uint64(ts))
	buf[21] = ' '
	putDigits(buf[22:32], uint64(seq))
	buf[32] = ' '
	for i := headerLen; i < len(buf); i++ {
		buf[i] = 'x'
	}
}

func putDigits(dst []byte, v uint64) {
	for i := len(dst) - 1; i >= 0; i-- {
		dst[i] = byte('0' + v%10)
		v /= 10
	}
}

// parsePayload returns the kind, timestamp and sequence of a message
// without allocating.
func parsePayload(b []byte) (kind byte, ts int64, seq uint32, err error) {
	if len(b) < headerLen-1 {
		return 0, 0, 0, errShortPayload
	}
	t, ok := digits(b[2:21])
	if !ok {
		return 0, 0, 0, errors.New("wsbench: bad timestamp in payload " + strconv.Quote(string(b[:headerLen-1])))
	}
	s, ok := digits(b[22:32])
	if !ok {
		return 0, 0, 0, errors.New("wsbench: bad sequence in payload")
	}
	return b[0], int64(t), uint32(s), nil
}

func digits(b []byte) (uint64, bool) {
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	return v, true
}

package main

import (
	"errors"
	"strconv"
)

// frame is what a load generator reads from a server envelope: the
// top-level members it routes and measures on, as sub-slices of the frame
// (valid only while the frame is) and integers. Decoding one costs a single
// pass over the bytes and no allocation; nested values (hello's convs,
// stats) are skipped — hello is decoded in full, with encoding/json, by
// the few code paths that need its conversation list.
type frame struct {
	typ, conv, id, from, offer, text, state, code, ref, customer, epoch []byte
	offset, ts, position                                                int64
}

var errBadFrame = errors.New("deskbench: malformed server frame")

// scanFrame fills f from one JSON object. String values are returned raw
// (escapes are not decoded: the members the harness compares — types,
// conversation and message IDs, its own texts — never contain any).
func scanFrame(b []byte, f *frame) error {
	*f = frame{}
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return errBadFrame
	}
	i++
	for {
		i = skipWS(b, i)
		if i >= len(b) {
			return errBadFrame
		}
		if b[i] == '}' {
			return nil
		}
		if b[i] == ',' {
			i = skipWS(b, i+1)
		}
		if i >= len(b) || b[i] != '"' {
			return errBadFrame
		}
		ks, ke, ok := scanString(b, i)
		if !ok {
			return errBadFrame
		}
		key := b[ks:ke]
		i = skipWS(b, ke+1)
		if i >= len(b) || b[i] != ':' {
			return errBadFrame
		}
		i = skipWS(b, i+1)
		if i >= len(b) {
			return errBadFrame
		}
		switch b[i] {
		case '"':
			vs, ve, ok := scanString(b, i)
			if !ok {
				return errBadFrame
			}
			if dst := f.stringField(key); dst != nil {
				*dst = b[vs:ve]
			}
			i = ve + 1
		case '{', '[':
			end, ok := skipComposite(b, i)
			if !ok {
				return errBadFrame
			}
			i = end
		default:
			end := i
			for end < len(b) && b[end] != ',' && b[end] != '}' && b[end] != ' ' && b[end] != '\n' && b[end] != '\t' && b[end] != '\r' {
				end++
			}
			if dst := f.intField(key); dst != nil {
				v, err := strconv.ParseInt(string(b[i:end]), 10, 64)
				if err != nil {
					return errBadFrame
				}
				*dst = v
			}
			i = end
		}
	}
}

func (f *frame) stringField(key []byte) *[]byte {
	switch string(key) {
	case "type":
		return &f.typ
	case "conv":
		return &f.conv
	case "id":
		return &f.id
	case "from":
		return &f.from
	case "offer":
		return &f.offer
	case "text":
		return &f.text
	case "state":
		return &f.state
	case "code":
		return &f.code
	case "ref":
		return &f.ref
	case "customer":
		return &f.customer
	case "epoch":
		return &f.epoch
	}
	return nil
}

func (f *frame) intField(key []byte) *int64 {
	switch string(key) {
	case "offset":
		return &f.offset
	case "ts":
		return &f.ts
	case "position":
		return &f.position
	}
	return nil
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\t' || b[i] == '\r') {
		i++
	}
	return i
}

// scanString returns the content bounds of the JSON string starting at
// b[i] == '"': b[start:end] is the raw content and b[end] the closing quote.
func scanString(b []byte, i int) (start, end int, ok bool) {
	start = i + 1
	for j := start; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return start, j, true
		}
	}
	return 0, 0, false
}

// skipComposite returns the index just past the object or array at b[i].
func skipComposite(b []byte, i int) (int, bool) {
	depth := 0
	for j := i; j < len(b); j++ {
		switch b[j] {
		case '"':
			_, end, ok := scanString(b, j)
			if !ok {
				return 0, false
			}
			j = end
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return j + 1, true
			}
		}
	}
	return 0, false
}

// --- what the load generators send -------------------------------------

// appendJSONString appends s as a JSON string; the harness's values are
// plain ASCII, anything else is escaped with strconv (valid JSON for the
// printable subset it produces).
func appendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x7f {
			return strconv.AppendQuoteToASCII(dst, s)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

// tsDigits is the width of the send timestamp that starts every chat text.
const tsDigits = 19

// appendMessage appends a message envelope: its text is the sender's
// time.Now().UnixNano() as 19 digits, a space, and 'x' padding up to size
// bytes (at least tsDigits+1), so the receiver can time the delivery.
func appendMessage(dst []byte, conv string, id uint64, sentNS int64, size int) []byte {
	dst = append(dst, `{"type":"message","conv":`...)
	dst = appendJSONString(dst, conv)
	dst = append(dst, `,"id":"`...)
	dst = strconv.AppendUint(dst, id, 10)
	dst = append(dst, `","text":"`...)
	dst = appendText(dst, sentNS, size)
	return append(dst, `"}`...)
}

func appendText(dst []byte, sentNS int64, size int) []byte {
	var ts [tsDigits]byte
	v := uint64(max(sentNS, 0))
	for i := tsDigits - 1; i >= 0; i-- {
		ts[i] = byte('0' + v%10)
		v /= 10
	}
	dst = append(dst, ts[:]...)
	dst = append(dst, ' ')
	for range max(size, tsDigits+1) - tsDigits - 1 {
		dst = append(dst, 'x')
	}
	return dst
}

// textSentNS reads the send timestamp back from a chat text.
func textSentNS(text []byte) (int64, bool) {
	if len(text) < tsDigits {
		return 0, false
	}
	var v int64
	for _, c := range text[:tsDigits] {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int64(c-'0')
	}
	return v, true
}

// parseUint parses a decimal ID without allocating.
func parseUint(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	return v, true
}

func appendConvCmd(dst []byte, typ, conv string) []byte {
	dst = append(dst, `{"type":"`...)
	dst = append(dst, typ...)
	dst = append(dst, `","conv":`...)
	dst = appendJSONString(dst, conv)
	return dst
}

func typingMsg(conv, state string) []byte {
	b := appendConvCmd(nil, "typing", conv)
	b = append(b, `,"state":`...)
	b = appendJSONString(b, state)
	return append(b, '}')
}

func acceptMsg(conv, offer string) []byte {
	b := appendConvCmd(nil, "accept", conv)
	b = append(b, `,"offer":`...)
	b = appendJSONString(b, offer)
	return append(b, '}')
}

func resolveMsg(conv string) []byte { return append(appendConvCmd(nil, "resolve", conv), '}') }
func cancelMsg(conv string) []byte  { return append(appendConvCmd(nil, "cancel", conv), '}') }

func resumeMsg(conv string, after uint64, epoch string) []byte {
	b := appendConvCmd(nil, "resume", conv)
	b = append(b, `,"offset":`...)
	b = strconv.AppendUint(b, after, 10)
	if epoch != "" {
		b = append(b, `,"epoch":`...)
		b = appendJSONString(b, epoch)
	}
	return append(b, '}')
}

func startMsg(entry string) []byte {
	if entry == "" {
		return []byte(`{"type":"start"}`)
	}
	b := append([]byte(nil), `{"type":"start","entry":`...)
	b = appendJSONString(b, entry)
	return append(b, '}')
}

package main

import "math/bits"

// offsetSet is a set of transcript offsets (1, 2, 3…) as a bitset. It
// serialises as JSON base64 of its words' little-endian bytes ([]byte), so
// a conversation of n messages costs n/8 bytes in a load generator's final
// report.
type offsetSet []byte

// add inserts o and reports whether it was new. Offset 0 is ignored.
func (s *offsetSet) add(o uint64) bool {
	if o == 0 {
		return false
	}
	i, bit := o/8, byte(1)<<(o%8)
	if int(i) >= len(*s) {
		n := make([]byte, max(int(i)+1, 2*len(*s)))
		copy(n, *s)
		*s = n
	}
	if (*s)[i]&bit != 0 {
		return false
	}
	(*s)[i] |= bit
	return true
}

func (s offsetSet) has(o uint64) bool {
	i := o / 8
	return o != 0 && int(i) < len(s) && s[i]&(1<<(o%8)) != 0
}

// count returns the number of offsets in s.
func (s offsetSet) count() int {
	n := 0
	for _, b := range s {
		n += bits.OnesCount8(b)
	}
	return n
}

// minus returns how many offsets of s are missing from t, and the first
// few of them.
func (s offsetSet) minus(t offsetSet) (n int, sample []uint64) {
	for i, b := range s {
		var tb byte
		if i < len(t) {
			tb = t[i]
		}
		d := b &^ tb
		if d == 0 {
			continue
		}
		n += bits.OnesCount8(d)
		for k := range 8 {
			if d&(1<<k) != 0 && len(sample) < 5 {
				sample = append(sample, uint64(i*8+k))
			}
		}
	}
	return n, sample
}

// maxOffset returns the largest offset in s, 0 when empty.
func (s offsetSet) maxOffset() uint64 {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] != 0 {
			return uint64(i*8 + 7 - bits.LeadingZeros8(s[i]))
		}
	}
	return 0
}

// trim drops trailing zero bytes (for the report).
func (s offsetSet) trim() offsetSet {
	i := len(s)
	for i > 0 && s[i-1] == 0 {
		i--
	}
	return s[:i]
}

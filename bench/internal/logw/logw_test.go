package logw

import (
	"bytes"
	"testing"
)

func TestPrefixWholeLines(t *testing.T) {
	var b bytes.Buffer
	w := Prefix(Locked(&b), "[x] ")
	_, _ = w.Write([]byte("one\ntw"))
	_, _ = w.Write([]byte("o\nthree"))
	if got, want := b.String(), "[x] one\n[x] two\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

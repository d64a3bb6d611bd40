//go:build race

package sessionbench

// raceEnabled: the race detector slows the single-goroutine hit-ratio replay
// tenfold and makes allocation counts meaningless, so those tests skip.
const raceEnabled = true

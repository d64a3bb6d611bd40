//go:build race

package router

// ringRaceEnabled is true when the race detector is on. The key-count
// quality tests are deterministic and single-goroutine, so the detector
// cannot find anything in them; they run in the plain `go test` pass.
const ringRaceEnabled = true

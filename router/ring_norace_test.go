//go:build !race

package router

// ringRaceEnabled is true when the race detector is on.
const ringRaceEnabled = false

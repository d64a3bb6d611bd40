//go:build !race

package sessionbench

const raceEnabled = false

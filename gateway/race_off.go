//go:build !race

package gateway

// raceHandoff is a no-op outside race builds; see race_on.go.
func raceHandoff() {}

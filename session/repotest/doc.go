// Package repotest is the conformance suite of session.Repository: every
// implementation's tests call Run with a function that opens (and reopens)
// a store, and so are held to the same contract — compare-and-set versions,
// fencing tokens, audit trails, gap-free transcript offsets under
// concurrency, client-ID deduplication, monotonic read markers, durability
// across Close and reopen, closed-repository and context errors.
//
// The suite uses testify's require/assert and bounded loops only; it starts
// goroutines of its own and waits for all of them before returning.
package repotest

// Package jsonbench compares JSON codecs on Switchboard's chat envelope —
// the message every customer and agent frame carries (type, conversation
// ID, client message ID, stream offset, timestamps, W3C traceparent, text) —
// marshalling and unmarshalling it with encoding/json, json-iterator
// (ConfigCompatibleWithStandardLibrary) and bytedance/sonic (ConfigStd,
// which the reference server uses, and the faster ConfigFastest).
//
// Run:
//
//	cd bench && go test -run '^$' -bench . -benchmem -count 6 ./json/ | tee json.txt
//	benchstat -col /codec json.txt
//
// The tests check that every codec produces output the others decode to the
// same envelope, so the benchmark compares equal work.
package jsonbench

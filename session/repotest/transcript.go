package repotest

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/session"
)

func msg(conv, sender, clientID, body string) session.Message {
	return session.Message{Conversation: conv, Sender: sender, ClientID: clientID, Body: body}
}

func testAppendSequential(t *testing.T, open Opener) {
	ctx := testContext(t)
	repo := open(t, "append")
	off, err := repo.LastOffset(ctx, "c1")
	require.NoError(t, err)
	require.Zero(t, off)

	full := session.Message{
		Conversation: "c1", Sender: "cust-1", SenderName: "Ada", SenderRole: "customer", ClientID: "m-1",
		Body: "Hello — ünïcödé ✓\nsecond line", At: at(0),
		Traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", Tracestate: "vendor=1",
	}
	res, err := repo.Append(ctx, full)
	require.NoError(t, err)
	require.False(t, res.Duplicate)
	want := full
	want.Offset = 1
	require.Equal(t, normMessage(want), normMessage(res.Message))

	before := time.Now()
	for i := 2; i <= 5; i++ {
		res, err := repo.Append(ctx, msg("c1", "agent-1", fmt.Sprintf("a-%d", i), fmt.Sprint("body ", i)))
		require.NoError(t, err)
		require.False(t, res.Duplicate)
		require.Equal(t, uint64(i), res.Message.Offset)
		// At is set when zero (ms tolerance for stores that round).
		require.WithinRange(t, res.Message.At, before.Add(-time.Millisecond), time.Now().Add(time.Millisecond))
	}
	// Another conversation has its own numbering.
	res, err = repo.Append(ctx, msg("c2", "agent-1", "a-2", "x"))
	require.NoError(t, err)
	require.Equal(t, uint64(1), res.Message.Offset)

	off, err = repo.LastOffset(ctx, "c1")
	require.NoError(t, err)
	require.Equal(t, uint64(5), off)
	msgs, err := repo.Messages(ctx, "c1", 0, 100)
	require.NoError(t, err)
	require.Len(t, msgs, 5)
	require.Equal(t, normMessage(want), normMessage(msgs[0]))
	for i, m := range msgs {
		require.Equal(t, uint64(i+1), m.Offset)
		require.Equal(t, "c1", m.Conversation)
	}
	assert.Equal(t, "body 3", msgs[2].Body)
	assert.Equal(t, "agent-1", msgs[2].Sender)
	assert.Equal(t, "a-3", msgs[2].ClientID)

	_, err = repo.Append(ctx, msg("", "s", "id", "no conversation"))
	require.Error(t, err, "a message needs a conversation")
}

func testAppendDuplicates(t *testing.T, open Opener) {
	ctx := testContext(t)
	repo := open(t, "dupes")
	first, err := repo.Append(ctx, msg("c1", "cust", "m-1", "original"))
	require.NoError(t, err)
	_, err = repo.Append(ctx, msg("c1", "cust", "m-2", "second"))
	require.NoError(t, err)

	// A retry (even with another body) returns the stored message.
	dup, err := repo.Append(ctx, msg("c1", "cust", "m-1", "retried"))
	require.NoError(t, err)
	require.True(t, dup.Duplicate)
	require.Equal(t, normMessage(first.Message), normMessage(dup.Message))

	// The same client ID from another sender, or in another conversation,
	// is another message.
	other, err := repo.Append(ctx, msg("c1", "agent", "m-1", "agent's"))
	require.NoError(t, err)
	require.False(t, other.Duplicate)
	require.Equal(t, uint64(3), other.Message.Offset)
	elsewhere, err := repo.Append(ctx, msg("c2", "cust", "m-1", "elsewhere"))
	require.NoError(t, err)
	require.False(t, elsewhere.Duplicate)
	require.Equal(t, uint64(1), elsewhere.Message.Offset)

	// An empty client ID is never deduplicated.
	for i := range 2 {
		res, err := repo.Append(ctx, msg("c1", "cust", "", "no id"))
		require.NoError(t, err)
		require.False(t, res.Duplicate)
		require.Equal(t, uint64(4+i), res.Message.Offset)
	}

	off, err := repo.LastOffset(ctx, "c1")
	require.NoError(t, err)
	require.Equal(t, uint64(5), off)
	msgs, err := repo.Messages(ctx, "c1", 0, 100)
	require.NoError(t, err)
	require.Len(t, msgs, 5)
	require.Equal(t, "original", msgs[0].Body)
	require.Equal(t, "agent's", msgs[2].Body)
}

// testAppendConcurrent: many writers on several conversations; every
// conversation's offsets are 1..n without gaps and each message is stored
// once at the offset its Append returned.
func testAppendConcurrent(t *testing.T, open Opener) {
	ctx := testContext(t)
	repo := open(t, "concurrent")
	const writers, perWriter, convs = 32, 24, 4
	type key struct{ sender, id string }
	offsets := make([]map[key]uint64, convs)
	for i := range offsets {
		offsets[i] = map[key]uint64{}
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				c := (w + i) % convs
				m := msg(fmt.Sprintf("conv-%d", c), fmt.Sprintf("user-%d", w), fmt.Sprintf("msg-%d", i), fmt.Sprintf("w%d i%d", w, i))
				res, err := repo.Append(ctx, m)
				if err != nil {
					errs <- err
					return
				}
				if res.Duplicate {
					errs <- fmt.Errorf("append %v: unexpected duplicate", m)
					return
				}
				mu.Lock()
				offsets[c][key{m.Sender, m.ClientID}] = res.Message.Offset
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	total := 0
	for c := range convs {
		conv := fmt.Sprintf("conv-%d", c)
		n := len(offsets[c])
		total += n
		msgs, err := repo.Messages(ctx, conv, 0, n+10)
		require.NoError(t, err)
		require.Len(t, msgs, n)
		for i, m := range msgs {
			require.Equal(t, uint64(i+1), m.Offset, "%s: gap or reorder", conv)
			require.Equal(t, m.Offset, offsets[c][key{m.Sender, m.ClientID}], "%s: offset returned by Append", conv)
			require.Equal(t, conv, m.Conversation)
		}
		last, err := repo.LastOffset(ctx, conv)
		require.NoError(t, err)
		require.Equal(t, uint64(n), last)
	}
	require.Equal(t, writers*perWriter, total)
}

// testAppendConcurrentDuplicates: the same message appended concurrently is
// stored once; every caller gets its offset.
func testAppendConcurrentDuplicates(t *testing.T, open Opener) {
	ctx := testContext(t)
	repo := open(t, "concurrent-dupes")
	const racers, rounds = 12, 10
	for round := range rounds {
		start := make(chan struct{})
		results := make([]session.AppendResult, racers)
		errs := make([]error, racers)
		var wg sync.WaitGroup
		for r := range racers {
			wg.Go(func() {
				<-start
				results[r], errs[r] = repo.Append(ctx, msg("c1", "cust", fmt.Sprintf("m-%d", round), fmt.Sprintf("copy %d", r)))
			})
		}
		close(start)
		wg.Wait()
		fresh := 0
		for r := range racers {
			require.NoError(t, errs[r])
			require.Equal(t, uint64(round+1), results[r].Message.Offset, "round %d racer %d", round, r)
			if !results[r].Duplicate {
				fresh++
			}
		}
		require.Equal(t, 1, fresh, "round %d: exactly one append stores the message", round)
		last, err := repo.LastOffset(ctx, "c1")
		require.NoError(t, err)
		require.Equal(t, uint64(round+1), last)
	}
}

// testMessagesWhileAppending: readers running alongside writers see each
// conversation as offsets 1..n without gaps or repeats, holding at least
// every message whose Append returned before the read started, whether
// they read it whole or in pages; LastOffset is never behind either.
func testMessagesWhileAppending(t *testing.T, open Opener) {
	ctx := testContext(t)
	repo := open(t, "read-while-append")
	const writers, perWriter, convs, readers = 8, 30, 3, 3
	conv := func(c int) string { return fmt.Sprintf("conv-%d", c) }
	// acked[c] is the highest offset of conv c an Append has returned:
	// offsets are gap-free, so 1..acked[c] are all stored.
	var acked [convs]atomic.Uint64
	var wg, readersWG sync.WaitGroup
	errs := make(chan error, writers+readers)
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				c := (w + i) % convs
				res, err := repo.Append(ctx, msg(conv(c), fmt.Sprintf("user-%d", w), fmt.Sprintf("msg-%d", i), fmt.Sprintf("w%d i%d", w, i)))
				if err != nil {
					errs <- err
					return
				}
				for {
					cur := acked[c].Load()
					if res.Message.Offset <= cur || acked[c].CompareAndSwap(cur, res.Message.Offset) {
						break
					}
				}
			}
		})
	}
	stop := make(chan struct{})
	check := func(c int, whole bool) error {
		want := acked[c].Load()
		var got []session.Message
		if whole {
			msgs, err := repo.Messages(ctx, conv(c), 0, 1<<20)
			if err != nil {
				return err
			}
			got = msgs
		} else {
			for {
				after := uint64(len(got))
				page, err := repo.Messages(ctx, conv(c), after, 7)
				if err != nil {
					return err
				}
				if len(page) == 0 {
					break
				}
				if page[0].Offset != after+1 {
					return fmt.Errorf("%s: page after %d starts at %d", conv(c), after, page[0].Offset)
				}
				got = append(got, page...)
			}
		}
		for i, m := range got {
			if m.Offset != uint64(i+1) || m.Conversation != conv(c) {
				return fmt.Errorf("%s: message %d of a read is offset %d of %q", conv(c), i, m.Offset, m.Conversation)
			}
		}
		if uint64(len(got)) < want {
			return fmt.Errorf("%s: read %d messages, %d were acknowledged before", conv(c), len(got), want)
		}
		last, err := repo.LastOffset(ctx, conv(c))
		if err != nil {
			return err
		}
		if last < uint64(len(got)) {
			return fmt.Errorf("%s: LastOffset %d after reading %d messages", conv(c), last, len(got))
		}
		return nil
	}
	for r := range readers {
		readersWG.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := check((r+n)%convs, n%2 == 0); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	readersWG.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	total := 0
	for c := range convs {
		require.NoError(t, check(c, true))
		require.NoError(t, check(c, false))
		total += int(acked[c].Load())
	}
	require.Equal(t, writers*perWriter, total)
}

func testMessagesPaging(t *testing.T, open Opener) {
	ctx := testContext(t)
	repo := open(t, "paging")
	for i := 1; i <= 25; i++ {
		_, err := repo.Append(ctx, msg("c1", "s", fmt.Sprint(i), fmt.Sprint("m", i)))
		require.NoError(t, err)
	}
	var got []uint64
	after := uint64(0)
	for page := 0; ; page++ {
		require.Less(t, page, 10)
		msgs, err := repo.Messages(ctx, "c1", after, 10)
		require.NoError(t, err)
		require.LessOrEqual(t, len(msgs), 10)
		if len(msgs) == 0 {
			break
		}
		for _, m := range msgs {
			got = append(got, m.Offset)
			require.Equal(t, fmt.Sprint("m", m.Offset), m.Body)
		}
		after = msgs[len(msgs)-1].Offset
	}
	require.Len(t, got, 25)
	for i, o := range got {
		require.Equal(t, uint64(i+1), o)
	}
	msgs, err := repo.Messages(ctx, "c1", 23, 100)
	require.NoError(t, err)
	require.Len(t, msgs, 2)
	msgs, err = repo.Messages(ctx, "c1", 25, 100)
	require.NoError(t, err)
	require.Empty(t, msgs)
	msgs, err = repo.Messages(ctx, "c1", 0, 0)
	require.NoError(t, err)
	require.Empty(t, msgs)
	msgs, err = repo.Messages(ctx, "unknown", 0, 10)
	require.NoError(t, err)
	require.Empty(t, msgs)
}

func testReadMarkers(t *testing.T, open Opener) {
	ctx := testContext(t)
	repo := open(t, "read")
	marks, err := repo.ReadMarkers(ctx, "c1")
	require.NoError(t, err)
	require.Empty(t, marks)

	moved, err := repo.SetRead(ctx, "c1", "ada", 0)
	require.NoError(t, err)
	require.False(t, moved, "0 is where every marker starts")
	for _, step := range []struct {
		who   string
		off   uint64
		moved bool
	}{
		{"ada", 5, true}, {"ada", 3, false}, {"ada", 5, false}, {"ada", 7, true},
		{"bob", 2, true}, {"bob", 1, false}, {"ada", 6, false},
	} {
		moved, err := repo.SetRead(ctx, "c1", step.who, step.off)
		require.NoError(t, err)
		require.Equal(t, step.moved, moved, "SetRead(%s, %d)", step.who, step.off)
	}
	_, err = repo.SetRead(ctx, "c2", "ada", 1)
	require.NoError(t, err)
	marks, err = repo.ReadMarkers(ctx, "c1")
	require.NoError(t, err)
	require.Equal(t, map[string]uint64{"ada": 7, "bob": 2}, marks)
	marks, err = repo.ReadMarkers(ctx, "c2")
	require.NoError(t, err)
	require.Equal(t, map[string]uint64{"ada": 1}, marks)
}

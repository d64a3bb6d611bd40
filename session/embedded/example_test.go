package embedded_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/switchboard-go/switchboard/session"
	"github.com/switchboard-go/switchboard/session/embedded"
)

func ExampleOpen() {
	dir, err := os.MkdirTemp("", "sessions")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)

	store, err := embedded.Open(dir, embedded.Options{})
	if err != nil {
		panic(err) // a *session.StoreError naming the path
	}
	defer store.Close()
	ctx := context.Background()

	conv := session.NewConversation("conv-1", time.Time{})
	rec := &session.Record{ID: "conv-1", Partition: "billing", Customer: "cust-42", Conversation: *conv}
	if err := store.Create(ctx, session.Fence{}, rec); err != nil {
		panic(err)
	}
	for _, text := range []string{"Hello?", "Is anyone there?"} {
		res, err := store.Append(ctx, session.Message{Conversation: "conv-1", Sender: "cust-42", ClientID: text, Body: text})
		if err != nil {
			panic(err)
		}
		fmt.Println(res.Message.Offset, res.Message.Body)
	}
	// A retried message is stored once.
	res, _ := store.Append(ctx, session.Message{Conversation: "conv-1", Sender: "cust-42", ClientID: "Hello?", Body: "Hello?"})
	fmt.Println("duplicate:", res.Duplicate, "offset:", res.Message.Offset)

	open, _ := store.OpenConversations(ctx, "billing")
	fmt.Println("open:", len(open), open[0].ID, open[0].Conversation.State)
	// Output:
	// 1 Hello?
	// 2 Is anyone there?
	// duplicate: true offset: 1
	// open: 1 conv-1 queued
}

package pgstore_test

import (
	"context"
	"errors"
	"log"
	"time"

	"github.com/switchboard-go/switchboard/session"
	"github.com/switchboard-go/switchboard/session/pgstore"
)

// Open migrates the schema and starts the append writer; Close stops them.
// A partition owner passes its fencing token on every record write.
func ExampleOpen() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	store, err := pgstore.Open(ctx, "postgres://switchboard@db.internal:5432/support?sslmode=verify-full", pgstore.Options{})
	switch {
	case errors.Is(err, session.ErrSchemaTooNew):
		log.Fatalf("a newer release migrated this database: %v", err)
	case errors.Is(err, session.ErrUnavailable):
		log.Fatalf("database unreachable: %v", err) // names host:port/database
	case err != nil:
		log.Fatal(err)
	}
	defer store.Close()

	owner := session.Fence{Partition: "billing", Token: 7} // from the host's lease
	rec := &session.Record{ID: "conv-1", Partition: "billing", Customer: "cust-42",
		Conversation: *session.NewConversation("conv-1", time.Time{})}
	if err := store.Create(ctx, owner, rec); errors.Is(err, session.ErrFenced) {
		log.Print("lost the billing partition to a newer owner; stop serving it")
	}
}

package desk

import (
	"github.com/bytedance/sonic"

	"github.com/switchboard-go/switchboard/examples/supportdesk/internal/protocol"
)

// Topic names; see the package doc.
const (
	topicCore  = "desk.core"
	topicSup   = "desk.sup"
	topicNodes = "desk.nodes"
	topicOwner = "desk.owner" // a new partition owner announces itself
)

// topicNode carries the owner's acknowledgements to one node's edge.
func topicNode(node string) string { return "desk.node." + node }

func topicUser(id string) string { return "desk.user." + id }
func topicConv(id string) string { return "desk.conv." + id }
func topicEph(id string) string  { return "desk.eph." + id }

// Command kinds sent by edges to the core.
const (
	cmdOpen   = "open"   // a connection opened
	cmdClose  = "close"  // a connection closed
	cmdEnv    = "env"    // a client envelope for the core
	cmdStored = "stored" // the data plane stored a message (offset, time, sender)
	cmdAck    = "ack"    // owner → edge: the command with Key was handled
	cmdOwner  = "owner"  // owner → every edge: I own the partition now
)

// command is what an edge publishes on desk.core.
type command struct {
	Kind     string             `json:"k"`
	Key      string             `json:"key,omitempty"` // idempotency key
	Resync   bool               `json:"rs,omitempty"`  // open: re-announcement, no hello
	Node     string             `json:"n"`
	Conn     uint64             `json:"c"`
	User     string             `json:"u"`
	Role     string             `json:"r"`
	Name     string             `json:"nm,omitempty"`
	Tier     string             `json:"t,omitempty"`
	Skills   []string           `json:"s,omitempty"`
	Capacity int                `json:"cap,omitempty"`
	Env      *protocol.Envelope `json:"e,omitempty"`
}

func encodeCommand(c *command) ([]byte, error) { return sonic.ConfigStd.Marshal(c) }

func decodeCommand(b []byte) (command, error) {
	var c command
	err := sonic.ConfigStd.Unmarshal(b, &c)
	return c, err
}

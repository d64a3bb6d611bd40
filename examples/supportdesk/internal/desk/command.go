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
)

func topicUser(id string) string { return "desk.user." + id }
func topicConv(id string) string { return "desk.conv." + id }
func topicEph(id string) string  { return "desk.eph." + id }

// Command kinds sent by edges to the core.
const (
	cmdOpen  = "open"  // a connection opened
	cmdClose = "close" // a connection closed
	cmdEnv   = "env"   // a client envelope for the core
)

// command is what an edge publishes on desk.core.
type command struct {
	Kind     string             `json:"k"`
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

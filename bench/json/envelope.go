package jsonbench

import (
	"encoding/json"

	"github.com/bytedance/sonic"
	jsoniter "github.com/json-iterator/go"
)

// Envelope is a realistic chat frame as a support backend exchanges it over
// WebSocket: what the whitepaper's "42k → 190k ops/s" codec table was about.
type Envelope struct {
	Type           string            `json:"type"`
	ConversationID string            `json:"conversation_id"`
	ClientMsgID    string            `json:"client_msg_id"`
	Offset         uint64            `json:"offset"`
	SentAt         int64             `json:"sent_at"`   // client clock, Unix ms
	ServerTS       int64             `json:"server_ts"` // server clock, Unix µs
	Traceparent    string            `json:"traceparent,omitempty"`
	From           Sender            `json:"from"`
	Text           string            `json:"text"`
	Attachments    []Attachment      `json:"attachments,omitempty"`
	Meta           map[string]string `json:"meta,omitempty"`
}

// Sender identifies who wrote the message.
type Sender struct {
	UserID string `json:"user_id"`
	Role   string `json:"role"`
	Name   string `json:"name,omitempty"`
}

// Attachment is a file the message refers to.
type Attachment struct {
	URL  string `json:"url"`
	Mime string `json:"mime"`
	Size int64  `json:"size"`
}

// Sample returns the envelope used by the benchmarks: a customer message
// with non-ASCII text, an attachment and a trace context (703 bytes
// encoded).
func Sample() Envelope {
	return Envelope{
		Type:           "message",
		ConversationID: "conv_01JD8Z4Q7W3X9K2M5N6P8R0T1V",
		ClientMsgID:    "c-7f3a9e12-5b4d-4c8e-9a1f-2d6e8b0c4f57",
		Offset:         1284,
		SentAt:         1764115200123,
		ServerTS:       1764115200125431,
		Traceparent:    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		From:           Sender{UserID: "cust_88412", Role: "customer", Name: "Zoë Müller"},
		Text: "Hi, my order #A-20931 still shows \"in transit\" after 9 days — the tracking page says " +
			"it left Shenzhen on the 14th. Can you check whether it's lost? 谢谢! I attached the receipt.",
		Attachments: []Attachment{{URL: "https://files.example.com/u/88412/receipt-20931.pdf", Mime: "application/pdf", Size: 184_321}},
		Meta:        map[string]string{"tier": "vip", "locale": "de-DE", "channel": "web"},
	}
}

// Codec is one JSON implementation under test.
type Codec struct {
	Name      string
	Marshal   func(v any) ([]byte, error)
	Unmarshal func(data []byte, v any) error
}

// Codecs returns the contenders in a fixed order.
func Codecs() []Codec {
	jsonIter := jsoniter.ConfigCompatibleWithStandardLibrary
	return []Codec{
		{"encoding-json", json.Marshal, json.Unmarshal},
		{"jsoniter", jsonIter.Marshal, jsonIter.Unmarshal},
		{"sonic-std", sonic.ConfigStd.Marshal, sonic.ConfigStd.Unmarshal},
		{"sonic-fastest", sonic.ConfigFastest.Marshal, sonic.ConfigFastest.Unmarshal},
	}
}

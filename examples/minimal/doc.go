// Command minimal is a complete support backend in about two hundred lines,
// built on Switchboard's public packages only — the SDK's wiring example.
// It covers:
//
//   - tiers: customers wait in a queue.WaitingRoom (P0, P1, P2 with SLA
//     deadlines that escalate and never drop) and get their position as it
//     changes;
//   - skill-based matching: queue.Match hands the first waiting
//     conversation, in the queue's own order, that router.Assigner can
//     give to a free agent with the required skills; a skill set nobody
//     can serve now does not block the conversations behind it;
//   - messages: each conversation is a fanout topic; the customer's
//     connection subscribes, bound to it with gateway.Conn.Bind so the
//     subscription ends when it closes; the assigned agent's subscription
//     reaches every connection of the agent and ends at resolve or when the
//     agent is lost;
//   - agent loss: when an agent's last connection closes (after a grace
//     period) its conversations go back to the queue in the place they had;
//   - metrics, /healthz and /readyz (every component's Ready) on -ops.
//
// glue.go is all the code that connects the packages (TestGlueUnder100Lines
// keeps it under 100 lines); protocol.go is the example's own wire protocol
// and main.go the process setup. README.md ("Wiring") describes the order
// in which a host builds, starts and stops the components.
//
// # Protocol
//
// Connect to ws://ADDR/ws with query parameters (and ?token= when
// MINIMAL_TOKEN is set):
//
//	customer: ?user=alice&role=customer&tier=0|1|2&skills=billing,french
//	agent:    ?user=bob&role=agent&skills=billing&capacity=2
//
// tier defaults to 2 (standard) and capacity to 1; anything else — no
// user, another role, a tier outside 0..2, a capacity below 1 — is refused
// with 401.
//
// Frames are text. A customer's frame is a chat line; an agent's is
// "CONV TEXT" or "CONV /resolve" (a conversation is named after its
// customer). The server sends:
//
//	queued N              the customer's position (1 = next)
//	assigned CONV AGENT   to the customer and the agent
//	CONV SENDER: TEXT     a chat line, to both
//	requeued CONV         the agent was lost; back in the queue, same place
//	resolved CONV         the agent resolved it
//	left CONV             the customer disconnected (to the agent)
//	error TEXT            the agent named a conversation it does not hold
//
// Run it with
//
//	go run ./examples/minimal -addr 127.0.0.1:8080 -ops 127.0.0.1:9090
package main

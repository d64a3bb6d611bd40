package main

// conv is one participant's view of one conversation in a load generator:
// the customer's or the agent's. A process may hold both views of the same
// conversation (customer and agent on the same generator); they are kept
// apart because each is owned by its own connection (dconn) and guarded by
// its mutex.
type conv struct {
	id    string
	dc    *dconn
	role  byte // roleCustomer or roleAgent
	tier  int8
	epoch string

	flood   bool // the isolation check's flooded conversation
	waiting bool // a customer parked in the queue for the whole run

	offerID string

	startNS, queuedNS, offerNS, assignedNS, resolvedNS int64
	endNS                                              int64 // agent: when to resolve it

	active    bool  // assigned and not resolved: my side sends
	resolving bool  // agent: resolve sent (customer: cancel sent)
	resolveNS int64 // when resolving was last sent
	resolved  bool
	pairIdx   int // position in loadGen.pairs, -1 when not there

	seq     uint64           // my last message ID in this conversation
	pending map[uint64]int64 // my unacknowledged message IDs → first send time
	retry   []uint64         // IDs to send again (rate_limited, unavailable, reconnect)
	queued  bool             // in loadGen.retryQ
	retryAt int64            // not before (rate_limited: back off)

	last    uint64 // every offset up to last was received
	recv    offsetSet
	viaRes  offsetSet  // offsets first received while a resume was out
	live    *offsetSet // recv when the final audit resume went out
	acked   offsetSet  // offsets of my own acknowledged messages
	final   uint64     // offset announced by resolved
	maxSeen uint64

	resumeOut  int  // resume requests without their resumed yet
	needResume bool // a resume is due once hello has arrived
	auditing   bool // the final audit resume is out

	dupLive, resumeDup           int // the same offset twice: live, or overlapping a resume
	recovered, auditRecovered    int // first received through a resume / the final audit
	resumes                      int
	rejected                     int // my messages refused (no_conversation after a resolve, …)
	positions, offeredNotices    int
	selfRecv, peerRecv, ackCount int
}

const (
	roleCustomer = 'c'
	roleAgent    = 'a'
)

// advance moves last over every offset received without a gap.
func (cv *conv) advance() {
	for cv.recv.has(cv.last + 1) {
		cv.last++
	}
}

// convReport is one participant's record of one conversation, sent to the
// coordinator at the end of a run; the coordinator joins the customer's and
// the agent's records of each conversation to find losses and to time
// offers (the customer's start and the agent's offer are seen by different
// connections, often in different processes).
type convReport struct {
	Conv     string    `json:"c"`
	Role     string    `json:"r"`
	Tier     int8      `json:"t"`
	Flood    bool      `json:"f,omitempty"`
	Waiting  bool      `json:"w,omitempty"`
	Start    int64     `json:"s,omitempty"`
	Queued   int64     `json:"q,omitempty"`
	Offer    int64     `json:"o,omitempty"`
	Assigned int64     `json:"a,omitempty"`
	Resolved int64     `json:"x,omitempty"`
	Acked    offsetSet `json:"k,omitempty"`
	Recv     offsetSet `json:"v,omitempty"`
	// Live is Recv before the final audit resume.
	Live           offsetSet `json:"l,omitempty"`
	Final          uint64    `json:"n,omitempty"`
	DupLive        int       `json:"d,omitempty"`
	ResumeDup      int       `json:"rd,omitempty"`
	Recovered      int       `json:"rc,omitempty"`
	AuditRecovered int       `json:"ar,omitempty"`
	Resumes        int       `json:"rs,omitempty"`
	Pending        int       `json:"p,omitempty"` // my messages neither acknowledged nor refused
	Rejected       int       `json:"j,omitempty"`
	Sent           uint64    `json:"sn,omitempty"` // messages sent (IDs used)
	Positions      int       `json:"ps,omitempty"`
	// State at the end, for the log when a view never finished.
	Active    bool `json:"ac,omitempty"`
	Resolving bool `json:"rg,omitempty"`
	ResumeOut int  `json:"ro,omitempty"`
}

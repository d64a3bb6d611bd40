package desk

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/bytedance/sonic"

	"github.com/switchboard-go/switchboard/fanout"
	"github.com/switchboard-go/switchboard/fanout/redisbroker"
	"github.com/switchboard-go/switchboard/gateway"
	"github.com/switchboard-go/switchboard/router"
	"github.com/switchboard-go/switchboard/session"
)

// Leases is the lock service that places the partition owner: at most one
// node holds a partition's lease at a time (fanout/redisbroker.Broker
// implements it with SET NX PX; RenewLease's errors wrap
// redisbroker.ErrLeaseLost when the lease is gone). The lease only keeps a second owner from
// starting; safety comes from the fencing token each owner takes from the
// Store when it starts, which the Store checks on every write.
type Leases interface {
	AcquireLease(ctx context.Context, name, owner string, ttl time.Duration) error
	RenewLease(ctx context.Context, name, owner string, ttl time.Duration) error
	ReleaseLease(ctx context.Context, name, owner string) error
	LeaseHolder(ctx context.Context, name string) (string, error)
}

// fenceSource is the repository's fencing-token counter.
type fenceSource interface {
	NextFence(ctx context.Context, partition string) (uint64, error)
}

// CloseTryAgainLater (1013) closes every connection of a node cut off from
// the cluster (Redis unreachable for NodeTTL): reconnect, to another node if
// there is one, with backoff.
const CloseTryAgainLater = 1013

func leaseName(partition string) string { return "desk.owner." + partition }

type nodeInfo struct {
	URL     string `json:"url"`
	Started int64  `json:"started"`
}

// heartbeat refreshes the node's presence and the ring of live nodes, and
// reports whether it reached the cluster.
func (s *Server) heartbeat(ctx context.Context) ([]router.Node, error) {
	info, err := sonic.ConfigStd.Marshal(nodeInfo{URL: s.url, Started: s.started.UnixNano()})
	if err != nil {
		return nil, err
	}
	if err := s.bus.Join(ctx, topicNodes, fanout.Member{ID: s.cfg.NodeID, Info: info}, s.cfg.NodeTTL); err != nil {
		return nil, err
	}
	members, err := s.bus.Members(ctx, topicNodes)
	if err != nil {
		return nil, err
	}
	var nodes []router.Node
	for _, m := range members {
		var ni nodeInfo
		if sonic.ConfigStd.Unmarshal(m.Info, &ni) != nil {
			continue
		}
		nodes = append(nodes, router.Node{ID: m.ID, Addr: ni.URL})
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].ID < nodes[j].ID })
	if err := s.ring.SetMembers(nodes); err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.live = make(map[string]bool, len(nodes))
	for _, n := range nodes {
		s.live[n.ID] = true
	}
	s.mu.Unlock()
	return nodes, nil
}

// tick is one round of the cluster loop: presence, then ownership of the
// partition, then the edge's health.
func (s *Server) tick() {
	// The lease first, with its own deadline: it is what keeps the
	// partition.
	lctx, lcancel := context.WithTimeout(s.ctx, s.cfg.LeaseTTL/2)
	s.renewLease(lctx)
	lcancel()
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.NodeTTL/2)
	defer cancel()
	_, err := s.heartbeat(ctx)
	now := time.Now()
	if err != nil {
		s.log.Warn("cluster heartbeat failed", "err", err)
		// A node that cannot reach the cluster cannot serve: after NodeTTL
		// without a heartbeat it closes its sockets so clients reconnect to
		// another node, and stays not ready until the cluster is back.
		if !s.lastBeat.IsZero() && now.Sub(s.lastBeat) > s.cfg.NodeTTL && !s.cutOff.Load() {
			s.cutOff.Store(true)
			s.log.Error("cut off from the cluster: closing client connections", "since", s.lastBeat)
			s.gw.Range(func(c *gateway.Conn) bool {
				if err := c.Close(CloseTryAgainLater, "node cut off from the cluster; reconnect"); err != nil {
					s.log.Debug("close cut-off connection", "conn", c.ID(), "err", err)
				}
				return true
			})
		}
	} else {
		s.lastBeat = now
		if s.cutOff.Swap(false) {
			s.log.Info("back in the cluster")
		}
	}
	s.ownPartition(ctx, err == nil)
	s.edge.retryPending(now)
}

// renewLease extends the owner's lease, or stops the core when it is lost
// or could not be renewed for a whole lease (someone else may own it now).
func (s *Server) renewLease(ctx context.Context) {
	s.mu.Lock()
	owner := s.core
	s.mu.Unlock()
	if owner == nil {
		return
	}
	err := s.cfg.Leases.RenewLease(ctx, leaseName(partition), s.cfg.NodeID, s.cfg.LeaseTTL)
	switch {
	case err == nil:
		s.renewed = time.Now()
	case errors.Is(err, redisbroker.ErrLeaseLost):
		s.stopCore("lease lost")
	case time.Since(s.renewed) > s.cfg.LeaseTTL:
		s.stopCore("lease not renewed in time")
	default:
		s.log.Warn("lease renewal failed; retrying", "err", err)
	}
}

// ownPartition seeks the partition's lease when this node does not own it.
// The preferred owner is the node the ring places the partition on; any node
// takes a lease left free for three rounds (the preferred one may be dead
// but still listed until its presence expires).
func (s *Server) ownPartition(ctx context.Context, reachable bool) {
	name := leaseName(partition)
	me := s.cfg.NodeID
	s.mu.Lock()
	owner := s.core
	s.mu.Unlock()
	if owner != nil {
		return
	}
	if !reachable {
		return
	}
	holder, err := s.cfg.Leases.LeaseHolder(ctx, name)
	if err != nil {
		return
	}
	if holder != "" {
		s.freeRounds = 0
		return
	}
	s.freeRounds++
	preferred, ok := s.ring.Lookup(partition)
	if (!ok || preferred.ID != me) && s.freeRounds < 3 {
		return
	}
	if err := s.cfg.Leases.AcquireLease(ctx, name, me, s.cfg.LeaseTTL); err != nil {
		return
	}
	s.renewed = time.Now()
	if err := s.takeOver(ctx); err != nil {
		s.log.Error("takeover failed; giving the lease up", "err", err)
		if rerr := s.cfg.Leases.ReleaseLease(ctx, name, me); rerr != nil {
			s.log.Warn("release lease", "err", rerr)
		}
	}
}

// takeOver starts the partition's core with a fresh fencing token: from
// here on, writes of any former owner are rejected by the store.
func (s *Server) takeOver(ctx context.Context) error {
	fs, ok := s.cfg.Store.(fenceSource)
	if !ok {
		return fmt.Errorf("%w: the Store has no fencing tokens (NextFence); a cluster needs them", ErrInvalidConfig)
	}
	token, err := fs.NextFence(ctx, partition)
	if err != nil {
		return err
	}
	start := time.Now()
	if err := s.startCore(session.Fence{Partition: partition, Token: token}); err != nil {
		return err
	}
	s.log.Info("took over the partition", "partition", partition, "fence", token, "rebuild", time.Since(start))
	return nil
}

// stopCore stops this node's core at once (the lease is gone or a write was
// fenced): it must not act as the owner any more.
func (s *Server) stopCore(why string) {
	s.mu.Lock()
	c := s.core
	s.core = nil
	s.mu.Unlock()
	if c == nil {
		return
	}
	s.log.Warn("giving up the partition", "partition", partition, "why", why)
	c.close()
	// Not s.ctx: a handover at Shutdown releases the lease after the
	// server's context ended.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), time.Second)
	defer cancel()
	if s.cfg.Leases != nil {
		if err := s.cfg.Leases.ReleaseLease(ctx, leaseName(partition), s.cfg.NodeID); err != nil {
			s.log.Warn("release lease", "err", err)
		}
	}
}

func (s *Server) clusterLoop() {
	defer close(s.loopDone)
	t := time.NewTicker(s.cfg.ClusterTick)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-s.fenced:
			s.stopCore("a write was fenced: another node owns the partition")
		case <-t.C:
			s.tick()
		}
	}
}

// isLive reports whether node is in the cluster's presence (always true on
// a single node).
func (s *Server) isLive(node string) bool {
	if s.cfg.Broker == nil {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.live[node]
}

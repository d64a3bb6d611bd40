package gateway

// Conn returns the open connection with the given ID.
func (g *Gateway) Conn(id uint64) (*Conn, bool) { return g.reg.get(id) }

// UserConns returns the open connections of userID (a new slice; a user may
// have several tabs or devices).
func (g *Gateway) UserConns(userID string) []*Conn {
	if userID == "" {
		return nil
	}
	return g.reg.user(nil, userID)
}

// SendToUser sends one message to every connection of userID and returns
// how many accepted it. It never blocks; connections over their outgoing
// cap are closed with CloseSlowConsumer and not counted.
func (g *Gateway) SendToUser(userID string, typ MessageType, data []byte) (sent int) {
	if userID == "" {
		return 0
	}
	var arr [8]*Conn
	for _, c := range g.reg.user(arr[:0], userID) {
		if c.Send(typ, data) == nil {
			sent++
		}
	}
	return sent
}

// Count returns the number of open connections with the given role.
func (g *Gateway) Count(role Role) int { return g.reg.count(role) }

// Counts returns the number of open connections by role.
func (g *Gateway) Counts() map[Role]int { return g.reg.roleCounts() }

// Len returns the number of open connections.
func (g *Gateway) Len() int { return int(g.reg.n.Load()) }

// Range calls fn for every open connection until fn returns false. fn runs
// outside the gateway's locks and may call any Gateway or Conn method;
// connections opened or closed during Range may or may not be visited.
func (g *Gateway) Range(fn func(*Conn) bool) { g.reg.rangeAll(fn) }

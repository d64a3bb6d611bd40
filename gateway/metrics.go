package gateway

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/switchboard-go/switchboard/observe"
)

const subsystem = "gateway"

// metrics holds pre-resolved children; it exists only with an Observer.
type metrics struct {
	open        *prometheus.GaugeVec
	accepted    prometheus.Counter
	rejected    *prometheus.CounterVec
	msgsIn      prometheus.Counter
	bytesIn     prometheus.Counter
	msgsOut     prometheus.Counter
	bytesOut    prometheus.Counter
	closes      *prometheus.CounterVec
	closeByCode map[int]prometheus.Counter
	slow        prometheus.Counter
	rateClose   prometheus.Counter
	rateDrop    prometheus.Counter
	panics      *prometheus.CounterVec
	handshake   prometheus.Observer
	broadcast   prometheus.Observer
}

func newMetrics(o *observe.Observer, g *Gateway) *metrics {
	m := &metrics{
		open:      o.Gauge(subsystem, "connections", "Open WebSocket connections by role.", "role"),
		accepted:  o.Counter(subsystem, "accepted_total", "Upgraded WebSocket connections.").WithLabelValues(),
		rejected:  o.Counter(subsystem, "rejected_total", "Refused WebSocket handshakes by reason.", "reason"),
		msgsIn:    o.Counter(subsystem, "messages_in_total", "Data messages received.").WithLabelValues(),
		bytesIn:   o.Counter(subsystem, "bytes_in_total", "Payload bytes of data messages received.").WithLabelValues(),
		msgsOut:   o.Counter(subsystem, "messages_out_total", "Data frames queued for sending.").WithLabelValues(),
		bytesOut:  o.Counter(subsystem, "bytes_out_total", "Frame bytes queued for sending.").WithLabelValues(),
		closes:    o.Counter(subsystem, "closes_total", "Closed connections by close code.", "code"),
		slow:      o.Counter(subsystem, "slow_consumer_total", "Connections closed with 4008 (slow consumer).").WithLabelValues(),
		panics:    o.Counter(subsystem, "handler_panics_total", "Recovered handler panics by handler.", "handler"),
		handshake: o.Histogram(subsystem, "handshake_seconds", "Time from request to upgraded and opened connection.", nil).WithLabelValues(),
		broadcast: o.Histogram(subsystem, "broadcast_seconds", "Duration of Broadcast calls.", nil).WithLabelValues(),
	}
	rl := o.Counter(subsystem, "rate_limited_total", "Frames over the per-connection rate limit by action (close: connections closed, drop: frames dropped).", "action")
	m.rateClose = rl.WithLabelValues("close")
	m.rateDrop = rl.WithLabelValues("drop")
	m.closeByCode = map[int]prometheus.Counter{}
	for _, code := range []int{CloseNormal, CloseGoingAway, CloseProtocolError, CloseNoStatus, CloseAbnormal,
		CloseInvalidPayload, ClosePolicyViolation, CloseMessageTooBig, CloseInternalError,
		CloseIdleTimeout, CloseWriteTimeout, CloseSlowConsumer} {
		m.closeByCode[code] = m.closes.WithLabelValues(strconv.Itoa(code))
	}
	o.GaugeFunc(subsystem, "executor_queue", "Handler jobs waiting for an executor worker.", func() float64 {
		return float64(g.exec.queued())
	})
	return m
}

func (m *metrics) closed(code int) {
	if c, ok := m.closeByCode[code]; ok {
		c.Inc()
		return
	}
	m.closes.WithLabelValues(strconv.Itoa(code)).Inc()
}

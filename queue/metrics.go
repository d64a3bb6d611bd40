package queue

import "github.com/prometheus/client_golang/prometheus"

// queueMetrics holds pre-resolved metric children; nil when no Observer.
type queueMetrics struct {
	depth   []prometheus.Gauge
	wait    []prometheus.Observer
	actions [][3]prometheus.Counter
}

func newQueueMetrics[T any](cfg Config[T]) *queueMetrics {
	o := cfg.Observer
	if o == nil {
		return nil
	}
	depth := o.Gauge("queue", "depth", "Items waiting, by queue and tier.", "queue", "tier")
	wait := o.Histogram("queue", "wait_seconds", "Time from push to hand-out, by queue and tier.", nil, "queue", "tier")
	acts := o.Counter("queue", "deadline_actions_total", "Deadline actions applied to expired items, by queue, tier and action.", "queue", "tier", "action")
	m := &queueMetrics{}
	for _, t := range cfg.Tiers {
		m.depth = append(m.depth, depth.WithLabelValues(cfg.Name, t.Name))
		m.wait = append(m.wait, wait.WithLabelValues(cfg.Name, t.Name))
		var a [3]prometheus.Counter
		for _, act := range []Action{Drop, Escalate, RetryOnce} {
			a[act] = acts.WithLabelValues(cfg.Name, t.Name, act.String())
		}
		m.actions = append(m.actions, a)
	}
	return m
}

func (m *queueMetrics) action(tier int, a Action) {
	if m != nil {
		m.actions[tier][a].Inc()
	}
}

// poolMetrics holds pre-resolved Pool metric children; nil when no Observer.
type poolMetrics struct {
	ok, failed, panicked prometheus.Counter
	panics               prometheus.Counter
	busy                 prometheus.Gauge
}

func newPoolMetrics[T any](q *Queue[T], cfg PoolConfig[T]) *poolMetrics {
	o := cfg.Observer
	if o == nil {
		return nil
	}
	runs := o.Counter("queue", "tasks_run_total", "Tasks run by pools, by queue and result (ok, error, panic).", "queue", "result")
	panics := o.Counter("queue", "panics_total", "Panics recovered in pool workers, by queue.", "queue")
	busy := o.Gauge("queue", "workers_busy", "Pool workers currently running a task, by queue.", "queue")
	name := q.cfg.Name
	return &poolMetrics{
		ok:       runs.WithLabelValues(name, "ok"),
		failed:   runs.WithLabelValues(name, "error"),
		panicked: runs.WithLabelValues(name, "panic"),
		panics:   panics.WithLabelValues(name),
		busy:     busy.WithLabelValues(name),
	}
}

package main

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/ryw-go/ryw/ryw"
)

// metrics is the registry behind /metrics: the Go runtime and the process,
// the tracker's Redis round trips, and what the read-your-writes core knows
// (see routingCollector, added by watch once the router exists).
type metrics struct {
	reg         *prometheus.Registry
	redisTime   *prometheus.HistogramVec
	redisErrors *prometheus.CounterVec
	ops         map[string]redisOp // the tracker's operations, resolved once
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		redisTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ryw_redis_duration_seconds",
			Help:    "Round trips to Redis by the read-your-writes tracker, by operation (lookup, record).",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5},
		}, []string{"op"}),
		redisErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ryw_redis_errors_total",
			Help: "Redis round trips of the tracker that failed (or timed out), by operation.",
		}, []string{"op"}),
	}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), m.redisTime, m.redisErrors)
	m.ops = map[string]redisOp{}
	for _, op := range []string{"lookup", "record"} {
		m.ops[op] = redisOp{m.redisTime.WithLabelValues(op), m.redisErrors.WithLabelValues(op)}
	}
	return m
}

// observeRedis is the tracker's TrackerConfig.Observe. The two
// operations' series are looked up once, not on every request.
func (m *metrics) observeRedis(op string, took time.Duration, err error) {
	o, ok := m.ops[op]
	if !ok {
		o = redisOp{m.redisTime.WithLabelValues(op), m.redisErrors.WithLabelValues(op)}
	}
	o.time.Observe(took.Seconds())
	if err != nil {
		o.errors.Inc()
	}
}

// redisOp is one operation's series.
type redisOp struct {
	time   prometheus.Observer
	errors prometheus.Counter
}

// watch adds what the read-your-writes core knows: its counters, the
// replicas and the primary as it sees them, and its own round trips.
func (m *metrics) watch(b *ryw.Balancer) {
	m.reg.MustRegister(&routingCollector{b: b}, prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "ryw_redis_lookup_pipelines_total",
		Help: "Pipelines the tracker's lookups sent to Redis; lookups made at the same time share one.",
	}, func() float64 { return float64(b.Stats().LookupPipelines) }), prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "ryw_replay_checks_total",
		Help: "Replay checks sent to replicas: reads whose connection had not yet seen the replica replay past what they needed (the others cost no extra round trip).",
	}, func() float64 { return float64(b.Stats().ReplayChecks) }), prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "ryw_redis_cached_lookups_total",
		Help: "Lookups the tracker's cache answered without asking Redis about the user (inside its lease, or after a barrier shared with the reads in flight).",
	}, func() float64 { return float64(b.Stats().CachedLookups) }), prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "ryw_redis_cache_barriers_total",
		Help: "Barriers the tracker's cache published (a message that must come back on its subscription) before trusting what it holds; reads in flight at the same time share one.",
	}, func() float64 { return float64(b.Stats().CacheBarriers) }), prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name:        "ryw_redis_lease_waits_total",
		Help:        "Writes that waited for every cache holding a lease (RYW_CACHE_LEASE) to acknowledge them (ended=acknowledged), or until a lease ended instead (ended=lapsed: a cache gone, cut off or too busy, or Redis lost its list of caches).",
		ConstLabels: prometheus.Labels{"ended": "acknowledged"},
	}, func() float64 { return float64(b.Stats().LeaseAcknowledged) }), prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name:        "ryw_redis_lease_waits_total",
		Help:        "Writes that waited for every cache holding a lease (RYW_CACHE_LEASE) to acknowledge them (ended=acknowledged), or until a lease ended instead (ended=lapsed: a cache gone, cut off or too busy, or Redis lost its list of caches).",
		ConstLabels: prometheus.Labels{"ended": "lapsed"},
	}, func() float64 { return float64(b.Stats().LeaseLapsed) }))
	const settleHelp = "Reads on the primary that settled first, after the client's reads on a replica (outcome=at-once; waited: for a transaction running when the read came; unsettled: a commit a synchronous standby held past the wait, answered 503 unsettled)."
	settled := func(outcome string, v func(ryw.Stats) int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "ryw_primary_settles_total", Help: settleHelp,
			ConstLabels: prometheus.Labels{"outcome": outcome}}, func() float64 { return float64(v(b.Stats())) })
	}
	m.reg.MustRegister(
		settled("at-once", func(s ryw.Stats) int64 { return s.Settles - s.SettleWaits }),
		settled("waited", func(s ryw.Stats) int64 { return s.SettleWaits - s.Unsettled }),
		settled("unsettled", func(s ryw.Stats) int64 { return s.Unsettled }))
}

// routingCollector reads the router's counters and the monitor's view of
// each replica at scrape time, so that the hot path only bumps counters it
// already keeps.
type routingCollector struct {
	b *ryw.Balancer
}

var (
	decisionsDesc = prometheus.NewDesc("ryw_routing_decisions_total",
		"Routing decisions, by reason (X-Routing-Reason) and node. Retries on the primary count as decisions too.", []string{"reason", "node"}, nil)
	retriesDesc = prometheus.NewDesc("ryw_read_retries_total",
		"Reads that failed on a replica and were retried on the primary, by cause.", []string{"cause"}, nil)
	lagSecondsDesc = prometheus.NewDesc("ryw_replica_lag_seconds",
		"How long the replica has been missing WAL the primary had, at its last check; 0 when caught up; absent while it is out of rotation.", []string{"replica"}, nil)
	lagBytesDesc = prometheus.NewDesc("ryw_replica_lag_bytes",
		"WAL the primary had written that the replica had not replayed, at its last check.", []string{"replica"}, nil)
	healthyDesc = prometheus.NewDesc("ryw_replica_healthy",
		"1 while the replica is in rotation, 0 while it is out (failed, or quarantined).", []string{"replica"}, nil)
	takenOutDesc = prometheus.NewDesc("ryw_replica_taken_out_total",
		"Times the replica left the rotation while it was in it: a failed check, or a query it failed.", []string{"replica"}, nil)
	overloadedDesc = prometheus.NewDesc("ryw_reads_overloaded_total",
		"Reads answered 503 (overloaded): they waited for a replica's pool past RYW_REPLICA_TIMEOUT, and the primary's retry budget had no room for them.", nil, nil)
	quarantinedDesc = prometheus.NewDesc("ryw_replica_quarantined",
		"1 while the replica is held out of rotation for flapping.", []string{"replica"}, nil)
	ignoredTokensDesc = prometheus.NewDesc("ryw_client_tokens_ignored_total",
		"Tokens clients sent back that were not routed on, by why: signature (forged, another user's, another key) or ahead (above the primary's position).", []string{"reason"}, nil)
	lostWritesDesc = prometheus.NewDesc("ryw_lost_writes_total",
		"Writes found lost in a failover (past the point where the new primary's timeline left the old one), by where: tracker (a user's mark in Redis, counted once by the instance that replaced it) or token (a client's token, at every request that brings one back); certain=true when even the write's lower bound is past it, false when the commit may be just before it. Each is logged.", []string{"found_in", "certain"}, nil)
	sessionEventsDesc = prometheus.NewDesc("ryw_session_floor_events_total",
		"Session-floor (monotonic reads) events: floor-lost (a client had been shown data a failover lost) and unmeasured (a read's position was taken from the primary instead).", []string{"event"}, nil)
	timelineDesc = prometheus.NewDesc("ryw_primary_timeline",
		"The primary's timeline at the monitor's last poll: it rises at each failover.", nil, nil)
	historyReadableDesc = prometheus.NewDesc("ryw_timeline_history_readable",
		"1 while the database role may read the primary's timeline history, 0 while it may not (grant it EXECUTE on pg_read_file(text)): after a failover, reads that must show a write made before it then go to the primary, and lost writes are not detected.", nil, nil)
	fenceAgeDesc = prometheus.NewDesc("ryw_fence_age_seconds",
		"Time since the poll that last confirmed the primary's fence; own-write reads go to the primary beyond the fence lease.", nil, nil)
	fenceAckDesc = prometheus.NewDesc("ryw_fence_acknowledged",
		"1 while this instance's acknowledgement of the fence (ryw_fence_ack) is live, 0 while it is not (the role lacks the grant, or the primary refuses writes): own-write reads then go to the primary.", nil, nil)
)

func (c *routingCollector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }

func (c *routingCollector) Collect(ch chan<- prometheus.Metric) {
	counts := c.b.Counts()
	primary := c.b.Primary()
	for reason, nodes := range counts.Decisions {
		for node, n := range nodes {
			ch <- prometheus.MustNewConstMetric(decisionsDesc, prometheus.CounterValue, float64(n), string(reason), node)
		}
	}
	for why, n := range counts.IgnoredTokens {
		ch <- prometheus.MustNewConstMetric(ignoredTokensDesc, prometheus.CounterValue, float64(n), why)
	}
	for _, where := range []string{ryw.LostInTracker, ryw.LostInToken} {
		for _, certain := range []bool{true, false} {
			ch <- prometheus.MustNewConstMetric(lostWritesDesc, prometheus.CounterValue, float64(counts.LostWrites[ryw.LostKey(where, certain)]), where, strconv.FormatBool(certain))
		}
	}
	for _, event := range []string{ryw.SessionLost, ryw.SessionUnmeasured} {
		ch <- prometheus.MustNewConstMetric(sessionEventsDesc, prometheus.CounterValue, float64(counts.Sessions[event]), event)
	}
	if primary.Timeline > 0 {
		ch <- prometheus.MustNewConstMetric(timelineDesc, prometheus.GaugeValue, float64(primary.Timeline))
		readable := 1.0
		if primary.HistoryError != "" {
			readable = 0
		}
		ch <- prometheus.MustNewConstMetric(historyReadableDesc, prometheus.GaugeValue, readable)
	}
	for cause, n := range counts.Retries {
		ch <- prometheus.MustNewConstMetric(retriesDesc, prometheus.CounterValue, float64(n), string(cause))
	}
	for _, st := range c.b.Status() {
		if st.Healthy {
			// A replica out of rotation has no known lag: no series, rather
			// than a 0 that would read as caught up.
			ch <- prometheus.MustNewConstMetric(lagSecondsDesc, prometheus.GaugeValue, st.LagSeconds, st.Name)
			ch <- prometheus.MustNewConstMetric(lagBytesDesc, prometheus.GaugeValue, float64(st.LagBytes), st.Name)
		}
		ch <- prometheus.MustNewConstMetric(healthyDesc, prometheus.GaugeValue, boolValue(st.Healthy), st.Name)
		ch <- prometheus.MustNewConstMetric(quarantinedDesc, prometheus.GaugeValue, boolValue(st.Quarantined), st.Name)
		ch <- prometheus.MustNewConstMetric(takenOutDesc, prometheus.CounterValue, float64(st.TakenOut), st.Name)
	}
	ch <- prometheus.MustNewConstMetric(overloadedDesc, prometheus.CounterValue, float64(counts.Overloaded))
	if asOf := primary.FenceAsOf; !asOf.IsZero() {
		ch <- prometheus.MustNewConstMetric(fenceAgeDesc, prometheus.GaugeValue, time.Since(asOf).Seconds())
	}
	if primary.System != "" {
		ch <- prometheus.MustNewConstMetric(fenceAckDesc, prometheus.GaugeValue, boolValue(primary.FenceAcknowledged))
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

package main

import (
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ryw-go/ryw/internal/devstack"
)

// TestShortChaosRun is the short form of make chaos: every fault of the
// schedule at least once, in every mode. Read-your-writes modes must see no
// violation, no 5xx and no lost write; the control (off) must see
// violations.
func TestShortChaosRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster and two API processes")
	}
	bin, err := devstack.BuildAPI(t.Context(), t.TempDir(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out, logs strings.Builder
	ok, err := run(t.Context(), []string{"-api-bin", bin, "-ops", "3000", "-users", "30", "-fault-every", "3s"}, &out, &logs)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, logs.String())
	}
	t.Log("\n" + out.String())
	if !ok {
		t.Errorf("the history check failed:\n%s", out.String())
	}
	for _, fault := range []string{"replica killed and restarted", "redis killed and restarted empty", "redis unreachable from the last instance", "replica replay paused"} {
		for _, mode := range []string{"- time:", "- lsn:", "- off:"} {
			line := lineWith(out.String(), mode, "Faults injected:")
			if !strings.Contains(line, fault) {
				t.Errorf("%s mode: fault %q was never injected: %s", mode, fault, line)
			}
		}
	}
}

// TestShortFailoverRun is the short form of the failover scenario, on a
// stack per mode: with asynchronous replication, acknowledged writes are
// lost, every user who lost one is counted, no read shows lost or diverged
// data, and reads and writes go on after the switch (the control, off,
// sees violations and regressions); with a synchronous quorum, none is
// lost.
func TestShortFailoverRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts clusters and API processes")
	}
	bin, err := devstack.BuildAPI(t.Context(), t.TempDir(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"-modes", "lsn,off"},
		{"-modes", "time", "-sync-standbys", "1"},
	} {
		var out, logs strings.Builder
		ok, err := run(t.Context(), append([]string{"-api-bin", bin, "-scenario", "failover", "-ops", "1500", "-users", "20"}, args...), &out, &logs)
		if err != nil {
			t.Fatalf("run %v: %v\n%s", args, err, logs.String())
		}
		t.Log("\n" + out.String())
		if !ok {
			t.Errorf("the history check failed for %v:\n%s", args, out.String())
		}
		if !strings.Contains(out.String(), "primary killed") {
			t.Errorf("%v: no failover in the report", args)
		}
	}
}

// lineWith returns the first line starting with prefix after the line
// after.
func lineWith(s, prefix, after string) string {
	_, rest, _ := strings.Cut(s, after)
	for _, l := range strings.Split(rest, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

func TestFlags(t *testing.T) {
	o, err := parseFlags(nil, io.Discard)
	if err != nil || strings.Join(o.modes, ",") != "time,lsn,off" || o.ops != 100_000 || o.instances != 2 || o.faultEvery != 8*time.Second {
		t.Errorf("defaults = %+v, %v", o, err)
	}
	for _, args := range [][]string{{"-modes", "time,fast"}, {"-ops", "10"}, {"-instances", "1"}, {"-users", "0"}, {"-fault-every", "1s"}, {"x"},
		{"-scenario", "chaos"}, {"-promote", "replica3"}, {"-sync-standbys", "3"}, {"-partition", "-1s"}} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) accepted bad input", args)
		}
	}
}

// TestFaultsFlag: -faults picks the faults scenario's faults, the report
// says which ran and which were left out, and off mode is judged as the
// control only when replay is paused, which is what makes it see
// violations.
func TestFaultsFlag(t *testing.T) {
	o, err := parseFlags(nil, io.Discard)
	if err != nil || strings.Join(o.faults, ",") != "pause,kill,redis,partition" {
		t.Fatalf("default faults = %q, %v; want all four", o.faults, err)
	}
	all := faultsText(o)
	if want := "a random replica's replay paused 0-2 s again and again; every 8s, a replica killed and restarted, Redis killed and restarted empty, Redis unreachable from the last instance for 1-3 s"; all != want {
		t.Errorf("every fault: %q, want %q", all, want)
	}
	if o, err = parseFlags([]string{"-faults", "kill, partition", "-cycles", "2"}, io.Discard); err != nil {
		t.Fatal(err)
	}
	for _, f := range faultNames {
		if want := f == "kill" || f == "partition"; o.injects(f) != want {
			t.Errorf("-faults kill,partition: injects(%s) = %v", f, !want)
		}
	}
	if got, want := faultsText(o), "every 8s, a replica killed and restarted, Redis unreachable from the last instance for 1-3 s; left out (-faults): pause, redis"; got != want {
		t.Errorf("faultsText = %q, want %q", got, want)
	}
	off := result{mode: "off", ops: 10, ownReads: 5, sessionReads: 5}
	if v := verdict([]result{off}, o); v != "" {
		t.Errorf("without replay paused, a control that saw nothing failed the run: %q", v)
	}
	if o, _ = parseFlags([]string{"-faults", "pause"}, io.Discard); verdict([]result{off}, o) == "" {
		t.Error("with replay paused, a control that saw nothing passed")
	}
	if o, _ = parseFlags([]string{"-scenario", "failover"}, io.Discard); !o.injects("pause") || o.injects("kill") {
		t.Error("the failover scenario pauses replay and injects none of the cycle's faults")
	}
	for _, args := range [][]string{{"-faults", ""}, {"-faults", "pause,pause"}, {"-faults", "flood"}, {"-faults", "pause", "-scenario", "none"}, {"-faults", "kill", "-scenario", "failover"}} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) accepted bad input", args)
		}
	}
}

// TestTopologyFlags: rywchaos takes devstack's topology flags, and its
// report names the topology.
func TestTopologyFlags(t *testing.T) {
	o, err := parseFlags([]string{"-redis", "sentinel", "-pooler", "transaction", "-least-privilege"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if tp := o.topology; tp.Redis != devstack.RedisSentinel || tp.Pooler != devstack.PoolTransaction || !tp.LeastPrivilege || tp.RedisReplicas != 0 {
		t.Errorf("topology = %+v", tp)
	}
	if o, err = parseFlags([]string{"-redis", "cluster"}, io.Discard); err != nil || o.topology.RedisReplicas != 1 {
		t.Errorf("-redis cluster: %+v, %v; want one replica per master", o.topology, err)
	}
	if o, err = parseFlags(nil, io.Discard); err != nil || o.topology.Redis != devstack.RedisSingle || o.topology.Pooler != "" {
		t.Errorf("defaults: %+v, %v; want a single Redis and no pooler", o.topology, err)
	}
	for _, args := range [][]string{{"-redis", "ha"}, {"-pooler", "statement"}, {"-redis-replicas", "1"}, {"-redis", "cluster", "-redis-replicas", "3"}} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) accepted bad input", args)
		}
	}
	o, _ = parseFlags([]string{"-redis", "sentinel"}, io.Discard)
	report := render([]result{{mode: "lsn", faults: map[string]int{}, reasons: map[string]int{}}}, o)
	if !strings.Contains(report, "Topology: a primary and 2 streaming replicas; Redis Sentinel") || !strings.Contains(report, "the sentinels promoting its replica") {
		t.Errorf("the report does not state the topology and its Redis fault:\n%s", report)
	}
}

// TestMediansOverRepeatedModes: a mode run more than once gets its median
// rate and p99; a list of distinct modes gets no such table.
func TestMediansOverRepeatedModes(t *testing.T) {
	run := func(mode string, ops int, secs float64, p99ms int) result {
		return result{mode: mode, ops: ops, elapsed: time.Duration(secs * float64(time.Second)), p99: time.Duration(p99ms) * time.Millisecond,
			faults: map[string]int{}, reasons: map[string]int{}}
	}
	o := options{scenario: "faults", ops: 1000}
	report := render([]result{run("time", 1000, 1, 300), run("lsn", 1000, 2, 100), run("lsn", 1000, 0.5, 500), run("time", 3000, 1, 200), run("lsn", 1000, 1, 400)}, o)
	for _, want := range []string{
		"| time | 2 | 2000 | 1000-3000 | 250 ms | 200-300 ms |",
		"| lsn | 3 | 1000 | 500-2000 | 400 ms | 100-500 ms |",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("the report lacks %q:\n%s", want, report)
		}
	}
	if report = render([]result{run("time", 1000, 1, 300), run("lsn", 1000, 2, 100)}, o); strings.Contains(report, "over its runs") {
		t.Errorf("medians over single runs:\n%s", report)
	}
}

func TestWhereTheTimeWent(t *testing.T) {
	var b strings.Builder
	writeSpent(&b, []result{{mode: "lsn", spent: map[string]spent{
		"read (lsn-caught-up)": {n: 100, total: 2 * time.Second},
		"write (write-fenced)": {n: 10, total: 1500 * time.Millisecond},
		"write (write)":        {n: 50, total: 1490 * time.Millisecond},
		"catalog (stale-ok)":   {n: 1, total: 10 * time.Millisecond}, // under 1% of 5 s: left out
	}}})
	got := b.String()
	rows := []string{
		"| lsn | read (lsn-caught-up) | 100 | 2.0 s | 40% | 20.0 ms |",
		"| lsn | write (write-fenced) | 10 | 1.5 s | 30% | 150.0 ms |",
		"| lsn | write (write) | 50 | 1.5 s | 30% | 29.8 ms |",
	}
	last := -1
	for _, row := range rows {
		i := strings.Index(got, row)
		if i < 0 || i < last {
			t.Errorf("the table lacks %q, or has it out of order (largest first):\n%s", row, got)
		}
		last = i
	}
	if strings.Contains(got, "stale-ok") {
		t.Errorf("a category under 1%% of the time is listed:\n%s", got)
	}
}

func TestVerdict(t *testing.T) {
	o := options{}
	good := []result{{mode: "lsn", ops: 10, ownReads: 5, sessionReads: 5}, {mode: "off", ops: 10, ownReads: 5, sessionReads: 5, violations: 3, regressions: 2}}
	if v := verdict(good, o); v != "" {
		t.Errorf("verdict(good) = %q", v)
	}
	recovered := &failoverInfo{recovered: true, lostUsers: 2, counted: 2, lostAcked: 3}
	if v := verdict([]result{{mode: "lsn", ops: 10, ownReads: 5, sessionReads: 5, failover: recovered}}, o); v != "" {
		t.Errorf("verdict(failover, every lost write counted) = %q", v)
	}
	for _, bad := range [][]result{
		{{mode: "lsn", ops: 10, ownReads: 5}},
		{{mode: "lsn", ops: 10, sessionReads: 5}},
		{{mode: "lsn", ops: 10, ownReads: 5, sessionReads: 5, failover: &failoverInfo{recovered: true}}},
		{{mode: "lsn", ops: 10, violations: 1}},
		{{mode: "lsn", ops: 10, regressions: 1}},
		{{mode: "time", ops: 10, status5xx: 1}},
		{{mode: "lsn", ops: 10, lostFinal: 1}},
		{{mode: "lsn", ops: 10, divergent: 1}},
		{{mode: "off", ops: 10, violations: 1}},
		{{mode: "off", ops: 10, regressions: 1}},
		{{mode: "lsn"}},
		{{mode: "lsn", ops: 10, failover: &failoverInfo{}}},
		{{mode: "lsn", ops: 10, failover: &failoverInfo{recovered: true, lostUsers: 2, counted: 1}}},
	} {
		if verdict(bad, o) == "" {
			t.Errorf("verdict(%+v) passed", bad)
		}
	}
	if verdict([]result{{mode: "lsn", ops: 10, ownReads: 5, sessionReads: 5, failover: recovered}}, options{syncStandbys: 1}) == "" {
		t.Error("a lost acknowledged write passed with a synchronous quorum")
	}
}

// TestLostCatalogByTimeline: a catalog version is lost when the old
// timeline acknowledged it above what the promoted node had, whenever the
// ack came; the promoted node takes writes a moment before pg_promote
// returns, and a version it acknowledged then is not lost.
func TestLostCatalogByTimeline(t *testing.T) {
	promotedAt := time.Now()
	before := promotedAt.Add(-50 * time.Millisecond)
	acks := []event{
		{kind: "write", version: 10, status: 200, timeline: 1, end: before.Add(-time.Second)},
		{kind: "write", version: 11, status: 200, timeline: 1, end: before.Add(-time.Second)},
		{kind: "write", version: 12, status: 200, timeline: 1, end: before.Add(-time.Second)},
		{kind: "write", version: 30, status: 200, timeline: 2, end: before},
		{kind: "write", version: 31, status: 200, timeline: 2, end: promotedAt.Add(time.Millisecond)},
	}
	fo := &failoverInfo{catalog: 10, timeline: 2, promotedAt: promotedAt}
	session := &userState{session: true, events: []event{
		{kind: "catalog", version: 30, status: 200, servedBy: "primary", start: promotedAt.Add(time.Millisecond)},
		{kind: "catalog", version: 31, status: 200, servedBy: "primary", start: promotedAt.Add(2 * time.Millisecond)},
	}}
	res := result{reasons: map[string]int{}}
	check(&res, []*userState{session}, acks, fo)
	if fo.lostAcked != 2 || res.divergent != 0 {
		t.Errorf("lost %d acknowledged catalog versions (want v11 and v12), %d reads of lost data (want 0): %v", fo.lostAcked, res.divergent, res.problems)
	}
	session.events = append(session.events, event{kind: "catalog", version: 12, status: 200, servedBy: "replica2", start: promotedAt.Add(3 * time.Millisecond)})
	res = result{reasons: map[string]int{}}
	fo.lostAcked = 0
	check(&res, []*userState{session}, acks, fo)
	if res.divergent != 1 {
		t.Errorf("a read of v12, lost, after the promotion: %d reads of lost data, want 1", res.divergent)
	}
}

func TestFaultsAt(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	spans := []faultSpan{
		{"a replica paused", at(0), at(100)},
		{"redis down", at(50), at(150)},
		{"a replica paused", at(60), at(80)}, // the other replica, at once
	}
	for _, tc := range []struct {
		ms   int
		want string
	}{
		{-1, "no fault"},
		{0, "a replica paused"},
		{70, "a replica paused + redis down"},
		{100, "redis down"},
		{150, "no fault"},
	} {
		if got := faultsAt(spans, at(tc.ms)); got != tc.want {
			t.Errorf("faultsAt(%d ms) = %q, want %q", tc.ms, got, tc.want)
		}
	}
}

func TestCompareRates(t *testing.T) {
	same := []float64{1000, 1400, 900, 1200}
	if est, lo, hi, ok := compareRates(same, same); !ok || est != 1 || lo != 1 || hi != 1 {
		t.Errorf("equal runs: %.3f (%.3f-%.3f), %v; want 1 (1-1)", est, lo, hi, ok)
	}
	// Every pair 10% ahead, whatever the machine did between pairs.
	ahead := []float64{1100, 1540, 990, 1320}
	if est, lo, hi, ok := compareRates(same, ahead); !ok || math.Abs(est-1.1) > 1e-9 || math.Abs(lo-1.1) > 1e-9 || math.Abs(hi-1.1) > 1e-9 {
		t.Errorf("10%% ahead: %.3f (%.3f-%.3f), %v; want 1.1", est, lo, hi, ok)
	}
	// Pairs that disagree: the interval holds 1.
	mixed := []float64{1100, 1300, 990, 1100}
	est, lo, hi, ok := compareRates(same, mixed)
	if !ok || !(lo < 1 && 1 < hi) || !(lo <= est && est <= hi) {
		t.Errorf("mixed pairs: %.3f (%.3f-%.3f), %v; want an interval around 1 that holds the estimate", est, lo, hi, ok)
	}
	if _, _, _, ok := compareRates(same, same[:3]); ok {
		t.Error("unequal runs compared")
	}
	if _, _, _, ok := compareRates(same[:2], same[:2]); ok {
		t.Error("2 pairs compared")
	}
}

func TestWriteComparison(t *testing.T) {
	var results []result
	for i, rate := range []float64{1000, 1050, 1060, 1010, 990, 1045} {
		mode := []string{"time", "lsn", "lsn", "time", "time", "lsn"}[i]
		results = append(results, result{mode: mode, ops: int(rate * 20), elapsed: 20 * time.Second})
	}
	var b strings.Builder
	writeComparison(&b, results)
	if !strings.Contains(b.String(), "| lsn / time | 3 | 1.05x | ") || !strings.Contains(b.String(), "| ahead | 1.05x |") {
		t.Errorf("comparison:\n%s", b.String())
	}
	b.Reset()
	writeComparison(&b, results[:2])
	if b.Len() != 0 {
		t.Errorf("one run each compared:\n%s", b.String())
	}
}

func TestVerdictNamesTheControlOnlyWhenOneRan(t *testing.T) {
	run := func(mode string, violations, regressions int) result {
		return result{mode: mode, ops: 100, ownReads: 50, sessionReads: 20, violations: violations, regressions: regressions, elapsed: time.Second}
	}
	for _, c := range []struct {
		results  []result
		scenario string
		want     string
	}{
		{[]result{run("time", 0, 0), run("lsn", 0, 0), run("off", 9, 3)}, "faults", "the control saw violations and regressions"},
		{[]result{run("time", 0, 0), run("lsn", 0, 0)}, "faults", "no control ran"},
		{[]result{run("time", 0, 0), run("off", 0, 0)}, "none", "the control is not judged without faults"},
		{[]result{run("time", 0, 0), run("off", 0, 0)}, "faults:kill,redis", "the control is not judged without replay paused"},
	} {
		scenario, faults, _ := strings.Cut(c.scenario, ":")
		o := options{scenario: scenario}
		if faults != "" {
			o.faults = strings.Split(faults, ",")
		}
		out := render(c.results, o)
		if !strings.Contains(out, "Verdict: pass") || !strings.Contains(out, c.want) {
			_, verdict, _ := strings.Cut(out, "Verdict")
			t.Errorf("%d modes, scenario %s: want a pass naming %q, got the verdict:\n%s", len(c.results), c.scenario, c.want, verdict)
		}
	}
}

// The report's settles and lost writes are the instances' counters, summed
// over them; an instance that does not answer adds nothing.
func TestMetricSums(t *testing.T) {
	serve := func(text string) string {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, text) }))
		t.Cleanup(s.Close)
		return s.URL
	}
	a := serve("# HELP ryw_primary_settles_total x\n# TYPE ryw_primary_settles_total counter\n" +
		"ryw_primary_settles_total{outcome=\"at-once\"} 7\nryw_primary_settles_total{outcome=\"waited\"} 2\n" +
		"ryw_lost_writes_total{certain=\"true\",found_in=\"tracker\"} 1\n")
	b := serve("ryw_primary_settles_total{outcome=\"at-once\"} 1.5e+01\nryw_primary_settles_total{outcome=\"unsettled\"} 0\n" +
		"ryw_lost_writes_total{certain=\"false\",found_in=\"tracker\"} 2\n")
	apis := []string{a, b, "http://127.0.0.1:1"}
	got := settlesCounted(t.Context(), http.DefaultClient, apis)
	if got["at-once"] != 22 || got["waited"] != 2 || len(got) != 2 {
		t.Errorf("settles = %v; want at-once 22, waited 2 (unsettled 0 left out)", got)
	}
	if total, certain := lostCounted(t.Context(), http.DefaultClient, apis); total != 3 || certain != 1 {
		t.Errorf("lost writes counted = %v, %v certain; want 3, 1", total, certain)
	}
}

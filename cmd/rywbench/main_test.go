package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ryw-go/ryw/internal/devstack"
	"github.com/ryw-go/ryw/internal/loadgen"
	"github.com/ryw-go/ryw/internal/proccpu"
)

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	for q, want := range map[float64]time.Duration{0.5: 50 * time.Millisecond, 0.99: 99 * time.Millisecond, 1: 100 * time.Millisecond, 0: time.Millisecond} {
		if got := percentile(ds, q); got != want {
			t.Errorf("percentile(1..100 ms, %v) = %v, want %v", q, got, want)
		}
	}
	if percentile(nil, 0.5) != 0 {
		t.Error("percentile of nothing is not 0")
	}
	if ds[0] != 100*time.Millisecond {
		t.Error("percentile reordered its input")
	}
}

func TestFlags(t *testing.T) {
	o, err := parseFlags(nil, io.Discard)
	if err != nil || o.suite != "throughput" || strings.Join(o.modes, ",") != "off,time,lsn" || o.rounds != 5 || o.conns != 32 || o.population != 1000 || !o.scale {
		t.Errorf("defaults = %+v, %v", o, err)
	}
	o, err = parseFlags([]string{"-suite", "own-write"}, io.Discard)
	if err != nil || strings.Join(o.modes, ",") != "time,lsn,off" || o.users != 32 || o.readAfter != 100*time.Millisecond {
		t.Errorf("own-write defaults = %+v, %v", o, err)
	}
	for _, args := range [][]string{
		{"-modes", "time,fast"}, {"-users", "0"}, {"-duration", "0s"}, {"-duration", "1h"}, {"-replicas", "0"}, {"x"},
		{"-suite", "fast"}, {"-modes", "time,lsn"}, {"-rounds", "0"}, {"-phase", "10ms"}, {"-conns", "0"}, {"-population", "0"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) accepted bad input", args)
		}
	}
}

func TestPoolerFlag(t *testing.T) {
	o, err := parseFlags(nil, io.Discard)
	if err != nil || o.pooler != "" || strings.Join(apiLabels(o), ",") != "off,time,lsn" {
		t.Errorf("without -pooler: pooler %q, labels %q, %v; want none, the modes alone", o.pooler, apiLabels(o), err)
	}
	o, err = parseFlags([]string{"-pooler", "none"}, io.Discard)
	if err != nil || o.pooler != "" {
		t.Errorf("-pooler none: pooler %q, %v; want none", o.pooler, err)
	}
	for mode, want := range map[string]string{
		"transaction": "off,off+pgbouncer,time,time+pgbouncer,lsn,lsn+pgbouncer",
		"session":     "off,off+pgbouncer,time,time+pgbouncer,lsn,lsn+pgbouncer",
	} {
		o, err := parseFlags([]string{"-pooler", mode}, io.Discard)
		if err != nil || o.pooler != mode || strings.Join(apiLabels(o), ",") != want {
			t.Errorf("-pooler %s: pooler %q, labels %q, %v; want %s", mode, o.pooler, apiLabels(o), err, want)
		}
	}
	o, err = parseFlags([]string{"-pooler=transaction", "-modes", "lsn,off"}, io.Discard)
	if got := strings.Join(apiLabels(o), ","); err != nil || got != "lsn,lsn+pgbouncer,off,off+pgbouncer" {
		t.Errorf("-pooler with -modes lsn,off: labels %q, %v", got, err)
	}
	for _, args := range [][]string{
		{"-pooler", "statement"}, {"-pooler", "Transaction"},
		{"-suite", "own-write", "-pooler", "session"},
		{"-scenarios", "none,slow", "-pooler", "transaction"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) accepted bad input", args)
		}
	}
}

func TestLabelsSayModeAndRoute(t *testing.T) {
	for label, want := range map[string]struct {
		mode   string
		pooled bool
	}{
		"off": {"off", false}, "lsn": {"lsn", false}, "lsn+pgbouncer": {"lsn", true}, "time+pgbouncer": {"time", true},
	} {
		if m, p := modeOf(label), pooled(label); m != want.mode || p != want.pooled {
			t.Errorf("%s: mode %q, pooled %v; want %q, %v", label, m, p, want.mode, want.pooled)
		}
	}
}

func TestAPIEnvPointsDirectProcessesPastThePoolers(t *testing.T) {
	stack := &devstack.Stack{
		Primary: &devstack.Node{Name: "primary", URL: "postgres://postgres@127.0.0.1:5001/ryw"},
		Replicas: []*devstack.Node{
			{Name: "replica1", URL: "postgres://postgres@127.0.0.1:5002/ryw"},
			{Name: "replica2", URL: "postgres://postgres@127.0.0.1:5003/ryw"},
		},
	}
	direct := []string{
		"DATABASE_URL=postgres://postgres@127.0.0.1:5001/ryw",
		"DATABASE_REPLICA_URLS=replica1=postgres://postgres@127.0.0.1:5002/ryw,replica2=postgres://postgres@127.0.0.1:5003/ryw",
		"DATABASE_POOLER=none",
	}
	pooledOpts := options{pooler: devstack.PoolTransaction, pprofMode: "lsn+pgbouncer"}
	for _, c := range []struct {
		o     options
		label string
		want  []string
	}{
		// Without -pooler, only the mode and the profiler port, as before.
		{options{pprofMode: "lsn"}, "lsn", []string{"RYW_MODE=lsn"}},
		{options{}, "off", []string{"RYW_MODE=off", "PPROF_ADDR="}},
		{pooledOpts, "lsn", append([]string{"RYW_MODE=lsn", "PPROF_ADDR="}, direct...)},
		// The pooled process keeps the stack's environment: the poolers.
		{pooledOpts, "lsn+pgbouncer", []string{"RYW_MODE=lsn"}},
		{pooledOpts, "off+pgbouncer", []string{"RYW_MODE=off", "PPROF_ADDR="}},
	} {
		if got := apiEnv(stack, c.o, c.label); !slices.Equal(got, c.want) {
			t.Errorf("apiEnv(pooler %q, %s) = %q, want %q", c.o.pooler, c.label, got, c.want)
		}
	}
}

func TestReportComparesWithTheBaseline(t *testing.T) {
	ms := func(n int) []time.Duration { return []time.Duration{time.Duration(n) * time.Millisecond} }
	out := render([]result{
		{mode: "time", reads: 10, replicaReads: 0, readLatency: ms(2), writeLatency: ms(1), reasons: map[string]int{"recent-write": 10}},
		{mode: "lsn", reads: 10, replicaReads: 9, readLatency: ms(3), writeLatency: ms(1), reasons: map[string]int{"lsn-caught-up": 9, "replicas-behind": 1}},
		{mode: "off", reads: 10, replicaReads: 10, violations: 2, readLatency: ms(1), writeLatency: ms(1), reasons: map[string]int{"ryw-off": 10}, firstProblems: []string{"stale"}},
	}, options{users: 1, duration: time.Second, readAfter: 100 * time.Millisecond, replicas: 2})
	reportHas(t, out, "| lsn  | 10", "90.0%", "+90.0 points", "1.50x", "- lsn: lsn-caught-up 9, replicas-behind 1", "First problems seen in off mode")
}

func TestReportComparesTwoBuildsModeByMode(t *testing.T) {
	ms := func(n int) []time.Duration { return []time.Duration{time.Duration(n) * time.Millisecond} }
	out := render([]result{
		{mode: "lsn", reads: 10, replicaReads: 10, readLatency: ms(3), writeLatency: ms(2), reasons: map[string]int{}},
		{mode: "lsn (baseline)", reads: 10, replicaReads: 9, readLatency: ms(2), writeLatency: ms(1), reasons: map[string]int{}},
	}, options{users: 1, duration: time.Second, readAfter: 100 * time.Millisecond, replicas: 2, baselineBin: "old"})
	reportHas(t, out, "This build against the baseline build", "| lsn  | +10.0 points  | 1.50x", "2.00x")
}

// TestOverloadReportGivesMediansAgainstThePeak: the overload suite runs 3
// rounds unless told, and its report gives each level's median goodput,
// its ratio to the level with the highest median, and the counts summed
// over the rounds.
func TestOverloadReportGivesMediansAgainstThePeak(t *testing.T) {
	o, err := parseFlags([]string{"-suite", "overload"}, io.Discard)
	if err != nil || o.rounds != 3 || o.conns != 64 {
		t.Fatalf("overload defaults = %+v, %v", o, err)
	}
	if o, err = parseFlags([]string{"-suite", "overload", "-rounds", "1"}, io.Discard); err != nil || o.rounds != 1 {
		t.Fatalf("-rounds 1 = %+v, %v", o, err)
	}
	o.rounds = 3
	phase := func(round, conns int, ok uint64, out int) overloadPhase {
		n := time.Duration(ok + 1)
		return overloadPhase{label: "lsn", round: round, conns: conns, secs: 1, requests: ok + 1, non2xx: 1, p99: time.Duration(conns) * time.Millisecond, takenOut: out, retries: 2,
			// Per answer: API 50 µs, PostgreSQL 40, Redis 0, wrk 10, the
			// machine busy 110 (10 µs other), idle a quarter of the time.
			cpu:     cpuUse{api: n * 50 * time.Microsecond, pg: n * 40 * time.Microsecond, gen: n * 10 * time.Microsecond},
			machine: proccpu.MachineUse{Busy: n * 110 * time.Microsecond, Idle: n * 110 * time.Microsecond / 3}}
	}
	rep := &overloadReport{labels: []string{"lsn"}, generator: "wrk", phases: []overloadPhase{
		phase(0, 64, 900, 0), phase(0, 256, 1000, 0), phase(0, 1024, 950, 1),
		phase(1, 64, 800, 0), phase(1, 256, 1200, 0), phase(1, 1024, 850, 0),
		phase(2, 64, 1000, 0), phase(2, 256, 1100, 0), phase(2, 1024, 1100, 0),
	}}
	report := strings.Join(strings.Fields(renderOverload(rep, o, "abc1234")), " ")
	reportHas(t, report,
		"| lsn | 64 (1x) | 900 | 800-1000 | 0.82x | - | 64.00 ms | 3 | 0 | 0 | 6 |",
		"| lsn | 256 (4x) | 1100 | 1000-1200 | 1.00x | - | 256.00 ms |",
		"| lsn | 1024 (16x) | 950 | 850-1100 | 0.86x | - | 1024.00 ms | 3 | 0 | 1 | 6 |",
		"| lsn | 64 (1x) | 50 | 40 | 0 | 10 | 110 | 10 | 25% | 0% |",
		"3 rounds",
	)
}

// TestOverloadComparesWithOffInTheSameTurn: vs off is the median over the
// rounds of a process's goodput over the off-mode process's at the same
// level in the same round, the proxied rows against off mode behind its
// proxy; the off rows and the control have none.
func TestOverloadComparesWithOffInTheSameTurn(t *testing.T) {
	o, err := parseFlags([]string{"-suite", "overload"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	phase := func(label string, round, conns int, ok uint64) overloadPhase {
		return overloadPhase{label: label, round: round, conns: conns, secs: 1, requests: ok}
	}
	var phases []overloadPhase
	// The machine slows down from round to round; lsn keeps 0.9, 0.8 and
	// 1.0 of off's goodput in the same turns (median 0.9), behind the
	// proxy 0.5 of off's there, whatever the direct off did.
	for round, off := range []uint64{1000, 600, 300} {
		for _, conns := range []int{64, 256} {
			lsn := []uint64{900, 480, 300}[round]
			phases = append(phases, phase("off", round, conns, off), phase("lsn", round, conns, lsn),
				phase("off"+proxiedSuffix, round, conns, 400), phase("lsn"+proxiedSuffix, round, conns, 200),
				phase(healthzLabel, round, conns, 5000))
		}
	}
	rep := &overloadReport{labels: []string{"off", "lsn", "off" + proxiedSuffix, "lsn" + proxiedSuffix, healthzLabel}, generator: "wrk", phases: phases}
	report := strings.Join(strings.Fields(renderOverload(rep, o, "abc1234")), " ")
	reportHas(t, report,
		"| vs peak | vs off | p99 |",
		"| off | 64 (1x) | 600 | 300-1000 | 1.00x | - |",
		"| lsn | 64 (1x) | 480 | 300-900 | 1.00x | 0.90x |",
		"| lsn | 256 (4x) | 480 | 300-900 | 1.00x | 0.90x |",
		"| off+haproxy | 64 (1x) | 400 | 400-400 | 1.00x | - |",
		"| lsn+haproxy | 64 (1x) | 200 | 200-200 | 1.00x | 0.50x |",
		"| healthz | 64 (1x) | 5000 | 5000-5000 | 1.00x | - |",
	)
	if got := offPeer("lsn", []string{"lsn"}); got != "" {
		t.Errorf("offPeer without an off process = %q, want none", got)
	}
	if got := offPeer("time"+baselineSuffix, []string{"off", "off" + baselineSuffix}); got != "off"+baselineSuffix {
		t.Errorf("offPeer(time+baseline) = %q, want off+baseline", got)
	}
}

// reportHas fails t for each of wants that report lacks.
func reportHas(t *testing.T, report string, wants ...string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(report, want) {
			t.Errorf("the report lacks %q:\n%s", want, report)
		}
	}
}

func TestSpliceKeepsWhatSurroundsTheMarkers(t *testing.T) {
	doc := "# Benchmarks\n\nprose\n" + beginMarker + "\nold table\n" + endMarker + "\n\nmore prose\n"
	got := splice(doc, "new table\n")
	want := "# Benchmarks\n\nprose\n" + beginMarker + "\nnew table\n" + endMarker + "\n\nmore prose\n"
	if got != want {
		t.Errorf("splice = %q, want %q", got, want)
	}
	if got := splice("no markers", "report"); got != "report" {
		t.Errorf("splice without markers = %q, want the report alone", got)
	}
}

func TestMedianAndCounts(t *testing.T) {
	if m := loadgen.Median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("loadgen.Median(3,1,2) = %v", m)
	}
	if m := loadgen.Median([]float64{4, 1, 2, 3}); m != 2.5 {
		t.Errorf("loadgen.Median(4,1,2,3) = %v", m)
	}
	for n, want := range map[int]string{1000: "1k", 100000: "100k", 2_000_000: "2M", 1500: "1500"} {
		if got := humanCount(n); got != want {
			t.Errorf("humanCount(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestThroughputReportStatesTheTargets(t *testing.T) {
	ph := func(reqs uint64, api time.Duration, p99 time.Duration) phase {
		return phase{requests: reqs, secs: 1, p50: p99 / 4, p99: p99, cpu: cpuUse{api: api * time.Duration(reqs)}}
	}
	cfg := configResult{
		cfg: tpConfig{replicas: 2, population: 1000, rounds: 1}, modes: []string{"off", "lsn"}, rate: 500, generator: "wrk",
		byMode: map[string]*modeRounds{
			"off": {peak: []phase{ph(1000, 100*time.Microsecond, 0)}, rate: []phase{ph(500, 0, 4*time.Millisecond)}},
			"lsn": {peak: []phase{ph(950, 110*time.Microsecond, 0)}, rate: []phase{ph(500, 0, 10*time.Millisecond)}},
		},
		limits: limits{pgbench: []pgbenchRun{{tps: 4000}}, redisGetRPS: 50000},
	}
	out := renderThroughput([]configResult{cfg}, options{window: 5 * time.Second, conns: 32, phase: time.Second}, "abc1234")
	reportHas(t, out,
		"commit `abc1234`", "closed loop (wrk)",
		"lsn mode throughput is 0.95x off (target at least 0.90x): **met**",
		"off mode is 0.250x `pgbench -S -M prepared` (target at least 0.20x): **met**",
		"lsn mode p99 at half the peak is 2.50x off's (target at most 2x): **not met**",
		"| lsn  | 950", "| 110 ",
	)
}

func TestThroughputReportShowsThePooler(t *testing.T) {
	ph := func(reqs uint64, api, pooler time.Duration) phase {
		return phase{requests: reqs, secs: 1, p50: time.Millisecond, p99: 4 * time.Millisecond,
			cpu: cpuUse{api: api * time.Duration(reqs), pooler: pooler * time.Duration(reqs)}}
	}
	rounds := func(reqs uint64, api, pooler time.Duration) *modeRounds {
		return &modeRounds{peak: []phase{ph(reqs, api, pooler)}, rate: []phase{ph(500, api, pooler)}}
	}
	cfg := configResult{
		cfg: tpConfig{replicas: 2, population: 1000, rounds: 1}, rate: 500, generator: "wrk", poolerVersion: "PgBouncer 1.18.0",
		modes: []string{"off", "off+pgbouncer", "lsn", "lsn+pgbouncer"},
		byMode: map[string]*modeRounds{
			"off":           rounds(1000, 100*time.Microsecond, 0),
			"off+pgbouncer": rounds(800, 100*time.Microsecond, 30*time.Microsecond),
			"lsn":           rounds(950, 110*time.Microsecond, 0),
			"lsn+pgbouncer": rounds(700, 110*time.Microsecond, 40*time.Microsecond),
		},
		limits: limits{pgbench: []pgbenchRun{{tps: 4000}}, redisGetRPS: 50000},
		own: []result{
			{mode: "lsn", reads: 100, replicaReads: 99, reasons: map[string]int{}},
			{mode: "lsn+pgbouncer", reads: 100, replicaReads: 98, violations: 1, reasons: map[string]int{}},
		},
	}
	o := options{window: 5 * time.Second, conns: 32, phase: time.Second, pooler: devstack.PoolTransaction}
	out := renderThroughput([]configResult{cfg}, o, "abc1234")
	reportHas(t, out,
		"Two API processes per mode", "DATABASE_POOLER=none", "labelled `<mode>+pgbouncer`",
		"PgBouncer 1.18.0 in front of every node in transaction pooling",
		fmt.Sprintf("default_pool_size = %d", poolSize(devstack.PoolTransaction)), "pgbench connects to the primary directly",
		"PgBouncer µs/req", "| lsn+pgbouncer | 700 ", "| 0.70x ", "| 40 ",
		"lsn mode throughput is 0.95x off",
		"- lsn+pgbouncer mode serves 98.0% of own-write reads from replicas (target at least 95%), with 1 violations: **not met**",
	)
	// The throughput targets are the direct processes'.
	if strings.Contains(out, "lsn+pgbouncer mode throughput") {
		t.Errorf("report sets a throughput target for the pooled process:\n%s", out)
	}
	if strings.Contains(out, "In session pooling") {
		t.Errorf("transaction pooling report warns about session pooling:\n%s", out)
	}
	// Session pooling: devstack sizes the pools for the pooled processes'
	// connections, so the report states the size and warns of no wait.
	o.pooler = devstack.PoolSession
	out = renderThroughput([]configResult{cfg}, o, "abc1234")
	if want := fmt.Sprintf("in session pooling (pool_mode = session, default_pool_size = %d", devstack.SessionPoolSize); !strings.Contains(out, want) {
		t.Errorf("session report lacks %q:\n%s", want, out)
	}
	if strings.Contains(out, "In session pooling a client connection holds a server connection") {
		t.Errorf("session report warns of a wait that %d server connections rule out:\n%s", devstack.SessionPoolSize, out)
	}

	// Without -pooler: no PgBouncer anywhere.
	o.pooler = ""
	cfg.modes, cfg.poolerVersion, cfg.own = []string{"off", "lsn"}, "", nil
	out = renderThroughput([]configResult{cfg}, o, "abc1234")
	if strings.Contains(strings.ToLower(out), "pgbouncer") || !strings.Contains(out, "One API process per mode") {
		t.Errorf("report without -pooler mentions PgBouncer or lacks the one-process note:\n%s", out)
	}
}

func TestUserArgsLeaveOutWhatMakeBenchPasses(t *testing.T) {
	got := userArgs([]string{"-api-bin", "bin/ryw-api", "-out=docs/BENCHMARKS.md", "-rounds", "3", "--scale=false"})
	if got != "-rounds 3 --scale=false" {
		t.Errorf("userArgs = %q", got)
	}
}

// TestPicturesAreDrawn draws the three pictures from a made-up run and
// checks that each is a PNG.
func TestPicturesAreDrawn(t *testing.T) {
	dir := os.Getenv("RYW_TEST_PICTURES_DIR") // to look at them
	if dir == "" {
		dir = t.TempDir()
	}
	ph := func(reqs uint64, p99 time.Duration) phase {
		return phase{requests: reqs, secs: 1, p50: p99 / 4, p99: p99}
	}
	var tls []timeline
	for i, m := range []string{"off", "time", "lsn"} {
		tl := timeline{mode: m, paused: "replica2"}
		for j := range 100 {
			at := time.Duration(j) * timelineLength / 100
			inPause := at >= pauseAt && at < resumeAt
			r := timelineRead{at: at, servedBy: []string{"replica1", "primary", "replica1"}[i], fresh: true}
			if m == "off" && j%2 == 0 {
				r.servedBy = "replica2"
				r.fresh = !inPause
			}
			if !r.fresh {
				tl.stale++
			}
			if r.servedBy != "primary" {
				tl.replica++
			}
			tl.reads = append(tl.reads, r)
			lag := 0.0
			if inPause {
				lag = float64(at-pauseAt) / 1e6
			}
			tl.lag = append(tl.lag, lagPoint{at: at, bytes: lag})
		}
		tls = append(tls, tl)
	}
	cfg := configResult{
		modes: []string{"off", "time", "lsn"}, rate: 500, timelines: tls,
		byMode: map[string]*modeRounds{
			"off":  {peak: []phase{ph(1000, 0)}, rate: []phase{ph(500, 4*time.Millisecond)}},
			"time": {peak: []phase{ph(950, 0)}, rate: []phase{ph(500, 5*time.Millisecond)}},
			"lsn":  {peak: []phase{ph(940, 0)}, rate: []phase{ph(500, 6*time.Millisecond)}},
		},
	}
	written, err := writePictures(dir, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(written) != 3 {
		t.Fatalf("wrote %v; want 3 pictures", written)
	}
	for _, p := range written {
		b, err := os.ReadFile(p)
		if err != nil || !bytes.HasPrefix(b, []byte("\x89PNG")) || len(b) < 5000 {
			t.Errorf("%s: %d bytes, %v; want a PNG", p, len(b), err)
		}
	}
}

// TestTheWrkScriptsGetAnswers: each script the overload suite gives wrk
// sends requests that a Go server answers. A request formatted before
// wrk's init has no Host header, and Go answers it 400 and closes the
// connection: the first version of the healthz script did that.
func TestTheWrkScriptsGetAnswers(t *testing.T) {
	if testing.Short() {
		t.Skip("runs wrk")
	}
	if !haveWrk() {
		t.Skip("wrk is not installed (apt-get install wrk)")
	}
	var paths sync.Map
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paths.Store(r.URL.Path, true)
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	b := &tpBench{stack: &devstack.Stack{Dir: t.TempDir()}, headers: []http.Header{{"X-Demo-Userid": {"u1"}}, {"X-Demo-Userid": {"u2"}}}}
	for script, path := range map[string]string{"me.lua": "/api/me", "healthz.lua": "/healthz"} {
		p, err := b.wrk(context.Background(), srv.URL, 2, time.Second, script)
		if err != nil {
			t.Fatalf("%s: %v", script, err)
		}
		if p.requests == 0 || p.non2xx != 0 || p.sockErrs != 0 {
			t.Errorf("%s: %d answers, %d non-2xx, %d socket errors; want answers and no errors", script, p.requests, p.non2xx, p.sockErrs)
		}
		if _, ok := paths.Load(path); !ok {
			t.Errorf("%s sent nothing to %s", script, path)
		}
	}
}

// TestOverloadBehindAProxy: -proxy haproxy is for the overload suite only,
// and its report gives the proxy's CPU per answer in a column of its own,
// taken out of "other".
func TestOverloadBehindAProxy(t *testing.T) {
	for _, args := range [][]string{{"-proxy", "haproxy"}, {"-suite", "overload", "-proxy", "nginx"}} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) accepted it", args)
		}
	}
	o, err := parseFlags([]string{"-suite", "overload", "-proxy", "haproxy", "-rounds", "1"}, io.Discard)
	if err != nil || o.proxy != "haproxy" {
		t.Fatalf("-suite overload -proxy haproxy = %+v, %v", o, err)
	}
	if o, err := parseFlags([]string{"-suite", "overload", "-proxy", "none"}, io.Discard); err != nil || o.proxy != "" {
		t.Fatalf("-proxy none = %+v, %v", o, err)
	}
	n := time.Duration(100)
	phase := func(label string, conns int, proxy time.Duration) overloadPhase {
		return overloadPhase{label: label, conns: conns, secs: 1, requests: 100,
			cpu:     cpuUse{api: n * 50 * time.Microsecond, pg: n * 40 * time.Microsecond, gen: n * 10 * time.Microsecond},
			proxy:   proxy,
			machine: proccpu.MachineUse{Busy: n * 150 * time.Microsecond}}
	}
	rep := &overloadReport{labels: []string{"lsn", "lsn" + proxiedSuffix}, generator: "wrk", proxied: true, phases: []overloadPhase{
		phase("lsn", 64, 0), phase("lsn"+proxiedSuffix, 64, n*30*time.Microsecond),
	}}
	report := strings.Join(strings.Fields(renderOverload(rep, o, "abc1234")), " ")
	reportHas(t, report,
		"| wrk µs | HAProxy µs | machine busy µs |",
		"| lsn | 64 (1x) | 50 | 40 | 0 | 10 | 0 | 150 | 50 |",
		"| lsn+haproxy | 64 (1x) | 50 | 40 | 0 | 10 | 30 | 150 | 20 |",
		"`maxconn 64`",
	)
}

package main

import (
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ryw-go/ryw/internal/devstack"
)

func TestPeerListCoversEveryConfiguration(t *testing.T) {
	var labels []string
	for _, p := range peerList() {
		labels = append(labels, p.label)
	}
	want := []string{
		"ryw lsn", "ryw time", "ryw off", "every read on the primary",
		"pgpool transaction, named statements", "pgpool transaction, unnamed statements",
		"pgpool always, named statements", "pgpool always, unnamed statements",
		"pgpool dml_adaptive, named statements", "pgpool dml_adaptive, unnamed statements",
	}
	if !slices.Equal(labels, want) {
		t.Errorf("peers = %q, want %q", labels, want)
	}
	for _, p := range peerList() {
		if p.label == "every read on the primary" && !slices.Contains(p.env, "DATABASE_REPLICA_URLS=") {
			t.Errorf("%s: env %q does not empty the replica list", p.label, p.env)
		}
	}
}

func TestPgpoolEnvMakesPgpoolTheOnlyDatabase(t *testing.T) {
	for named, pooler := range map[bool]string{true: "DATABASE_POOLER=none", false: "DATABASE_POOLER=session"} {
		env := pgpoolEnv("postgres://pgpool/ryw", "postgres://primary/ryw", named)
		for _, want := range []string{"RYW_MODE=off", "DATABASE_URL=postgres://pgpool/ryw", "DATABASE_REPLICA_URLS=", pooler, "DATABASE_MIGRATION_URL=postgres://primary/ryw"} {
			if !slices.Contains(env, want) {
				t.Errorf("named=%v: env %q lacks %s", named, env, want)
			}
		}
	}
}

func TestSelectShare(t *testing.T) {
	nodes := func(p, r1, r2 int64) []devstack.PoolNode {
		return []devstack.PoolNode{{ID: 0, Role: "primary", Selects: p}, {ID: 1, Role: "standby", Selects: r1}, {ID: 2, Role: "standby", Selects: r2}}
	}
	if got := selectShare(nodes(10, 5, 5), nodes(35, 30, 30)); got != 200.0/3 {
		t.Errorf("share = %v, want 66.7 (25 on the primary, 50 on standbys)", got)
	}
	for _, tc := range []struct{ before, after []devstack.PoolNode }{
		{nil, nodes(1, 1, 1)}, {nodes(1, 1, 1), nodes(1, 1, 1)}, {nodes(1, 1, 1), nodes(1, 1, 1)[:2]},
	} {
		if got := selectShare(tc.before, tc.after); got != -1 {
			t.Errorf("selectShare(%v, %v) = %v, want -1 (unknown)", tc.before, tc.after, got)
		}
	}
}

func TestDecisionShare(t *testing.T) {
	before := parseDecisions(`# HELP ryw_routing_decisions_total Routing decisions
ryw_routing_decisions_total{node="primary",reason="write"} 100
ryw_routing_decisions_total{node="replica1",reason="stale-ok"} 10
`)
	after := parseDecisions(`ryw_routing_decisions_total{node="primary",reason="write"} 500
ryw_routing_decisions_total{node="replica1",reason="stale-ok"} 40
ryw_routing_decisions_total{node="replica2",reason="lsn-caught-up"} 50
ryw_routing_decisions_total{node="primary",reason="recent-write"} 20
`)
	if len(after) != 4 {
		t.Fatalf("parsed %v", after)
	}
	if got := decisionShare(before, after); got != 80 {
		t.Errorf("share = %v, want 80 (80 of 100 reads on replicas, writes left out)", got)
	}
	if decisionShare(nil, after) != -1 || decisionShare(after, after) != -1 {
		t.Error("no readings or no reads must be unknown")
	}
}

func TestErrorCauses(t *testing.T) {
	log := `time=x level=ERROR msg="request failed" err="save profile: FATAL: failed to read kind from backend (SQLSTATE XX000)" requestId=a
time=x level=ERROR msg="request failed" err="save profile: FATAL: failed to read kind from backend (SQLSTATE XX000)" requestId=b
time=x level=ERROR msg="request failed" err="ryw: the \"primary\" is gone" requestId=c
time=x level=ERROR msg=request status=500`
	got := errorCauses(log)
	want := map[string]int{"FATAL: failed to read kind from backend (SQLSTATE XX000)": 2, `ryw: the "primary" is gone`: 1}
	if len(got) != len(want) {
		t.Fatalf("causes = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("causes[%q] = %d, want %d (all: %v)", k, got[k], v, got)
		}
	}
}

func TestStartFailureIsTheAPIsLastWord(t *testing.T) {
	err := &startError{"start api1: api1 exited during start-up: exit status 1\nlevel=WARN msg=demo\nryw api: ryw: primary: refused\n"}
	if got := startFailure(err); got != "ryw api: ryw: primary: refused" {
		t.Errorf("startFailure = %q", got)
	}
}

type startError struct{ s string }

func (e *startError) Error() string { return e.s }

func TestSummarizePeerCountsFailuresAndComparesRoundByRound(t *testing.T) {
	pk := func(n uint64) phase { return phase{requests: n, secs: 1} }
	off := &peerResult{peer: peer{label: peerOff}, turns: []peerTurn{
		{started: true, peak: pk(1000), peakShare: 100, ownShare: 100},
		{started: true, peak: pk(2000), peakShare: 100, ownShare: 100},
	}}
	pg := &peerResult{peer: peer{label: "pgpool x"}, turns: []peerTurn{
		{started: false, attempts: startAttempts, peakShare: -1, ownShare: -1},
		{started: true, peak: phase{requests: 500, secs: 1, bad: 3}, peakShare: 40, ownShare: -1,
			own: result{reads: 10, violations: 2, regressions: 1, errors: 4}},
	}}
	s := summarizePeer(pg, off)
	if s.started != 1 || s.rounds != 2 || s.peak != 500 || s.vsOff != 0.25 || s.non200 != 3 ||
		s.reads != 10 || s.violations != 2 || s.regs != 1 || s.ownErrors != 4 || s.peakShare != 40 || s.ownShare != -1 {
		t.Errorf("summary = %+v", s)
	}
}

func TestPeersReportStatesSettingsAndFailures(t *testing.T) {
	o, err := parseFlags([]string{"-suite", "peers", "-rounds", "1"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	rep := peersReport{version: "pgpool-II version 4.3.5", rounds: 1,
		settings: [][2]string{{"load_balance_mode", "on"}, {"disable_load_balance_on_write", "'transaction'"}, {"num_init_children", "32"}}}
	for _, p := range peerList() {
		r := &peerResult{peer: p, causes: map[string]int{}, turns: []peerTurn{{started: true, attempts: 1, peak: phase{requests: 100, secs: 1}, peakShare: -1, ownShare: 50}}}
		if p.pgpool == "dml_adaptive" && p.named {
			r.causes["FATAL: failed to read kind from backend (SQLSTATE XX000)"] = 7
		}
		if p.pgpool == "transaction" && p.named {
			r.turns[0] = peerTurn{attempts: startAttempts, startErr: "ryw api: refused", peakShare: -1, ownShare: -1}
		}
		rep.results = append(rep.results, r)
	}
	out := renderPeers(rep, o, "abc1234")
	reportHas(t, out,
		"`abc1234`", "pgpool-II version 4.3.5", "disable_load_balance_on_write = 'transaction' | 'always' | 'dml_adaptive'",
		"num_init_children = 32", "| ryw off ", "1.00x", "7 request(s) failed with `FATAL: failed to read kind from backend",
		"pgpool transaction, named statements, round 1: the API did not start in 5 attempts: ryw api: refused", "0 of 1",
	)
}

func TestSplicePeersKeepsTheOtherSuites(t *testing.T) {
	doc := "# B\n" + beginMarker + "\nthroughput\n" + endMarker + "\n"
	once := splicePeers(doc, "peers 1\n")
	if !strings.Contains(once, "throughput") || !strings.HasSuffix(once, peersBegin+"\npeers 1\n"+peersEnd+"\n") {
		t.Errorf("first splice = %q", once)
	}
	twice := splicePeers(once+"after\n", "peers 2\n")
	if strings.Contains(twice, "peers 1") || !strings.Contains(twice, "peers 2\n"+peersEnd+"\nafter\n") || !strings.Contains(twice, "throughput") {
		t.Errorf("second splice = %q", twice)
	}
}

func TestPeersFlags(t *testing.T) {
	o, err := parseFlags([]string{"-suite", "peers", "-rounds", "1", "-duration", "3s", "-phase", "3s"}, io.Discard)
	if err != nil || o.suite != "peers" || o.duration != 3*time.Second || o.phase != 3*time.Second {
		t.Errorf("peers flags = %+v, %v", o, err)
	}
	for _, args := range [][]string{{"-suite", "peers", "-modes", "lsn"}, {"-suite", "peers", "-baseline-bin", "x"}, {"-suite", "peers", "-pooler", "session"}} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) accepted what the peers suite does not use", args)
		}
	}
}

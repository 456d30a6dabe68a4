package main

import (
	"io"
	"strings"
	"testing"
	"time"
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
	if err != nil || strings.Join(o.modes, ",") != "time,lsn,off" || o.users != 32 || o.readAfter != 100*time.Millisecond {
		t.Errorf("defaults = %+v, %v", o, err)
	}
	for _, args := range [][]string{{"-modes", "time,fast"}, {"-users", "0"}, {"-duration", "0s"}, {"-duration", "1h"}, {"-replicas", "0"}, {"x"}} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) accepted bad input", args)
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
	for _, want := range []string{"| lsn  | 10", "90.0%", "+90.0 points", "1.50x", "- lsn: lsn-caught-up 9, replicas-behind 1", "First problems seen in off mode"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

func TestReportComparesTwoBuildsModeByMode(t *testing.T) {
	ms := func(n int) []time.Duration { return []time.Duration{time.Duration(n) * time.Millisecond} }
	out := render([]result{
		{mode: "lsn", reads: 10, replicaReads: 10, readLatency: ms(3), writeLatency: ms(2), reasons: map[string]int{}},
		{mode: "lsn (baseline)", reads: 10, replicaReads: 9, readLatency: ms(2), writeLatency: ms(1), reasons: map[string]int{}},
	}, options{users: 1, duration: time.Second, readAfter: 100 * time.Millisecond, replicas: 2, baselineBin: "old"})
	for _, want := range []string{"This build against the baseline build", "| lsn  | +10.0 points  | 1.50x", "2.00x"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

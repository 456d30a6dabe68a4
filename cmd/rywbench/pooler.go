package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/ryw-go/ryw/internal/devstack"
	"github.com/ryw-go/ryw/internal/proccpu"
)

// With -pooler, the throughput suite's stack has a PgBouncer in front of
// every node, and each mode runs in two API processes on it: one that
// connects to the nodes directly, labelled with the mode alone, and one
// that connects through the poolers, labelled <mode>+pgbouncer. They take
// turns like any two modes, so the report sets what the pooler costs beside
// what read-your-writes costs, both against off mode, direct.

// pooledSuffix ends the label of an API process that goes through PgBouncer.
const pooledSuffix = "+pgbouncer"

// baselineSuffix ends the label of an API process run from -baseline-bin:
// the same mode, another build, taking turns with this one.
const baselineSuffix = "+baseline"

// apiLabels are the suite's API processes, in the order they take turns
// (rotated each round): the modes, each followed, with -pooler, by its
// pooled twin and, with -baseline-bin, by its baseline twin.
func apiLabels(o options) []string {
	var labels []string
	for _, m := range o.modes {
		labels = append(labels, m)
		if o.pooler != "" {
			labels = append(labels, m+pooledSuffix)
		}
		if o.baselineBin != "" {
			labels = append(labels, m+baselineSuffix)
		}
	}
	return labels
}

// modeOf is the RYW_MODE of the API process labelled label.
func modeOf(label string) string {
	return strings.TrimSuffix(strings.TrimSuffix(label, pooledSuffix), baselineSuffix)
}

// pooled says whether the API process labelled label goes through PgBouncer.
func pooled(label string) bool { return strings.HasSuffix(label, pooledSuffix) }

// baseline says whether the API process labelled label runs -baseline-bin.
func baseline(label string) bool { return strings.HasSuffix(label, baselineSuffix) }

// apiBinary is the executable of the API process labelled label.
func apiBinary(o options, label string) string {
	if baseline(label) {
		return o.baselineBin
	}
	return o.apiBin
}

// apiEnv is the environment, on top of the stack's (Stack.Env: through the
// poolers when the stack has them), of the API process labelled label.
func apiEnv(stack *devstack.Stack, o options, label string) []string {
	env := []string{"RYW_MODE=" + modeOf(label)}
	if label != o.pprofMode {
		env = append(env, "PPROF_ADDR=") // one profiler port, for one process
	}
	if o.pooler != "" && !pooled(label) {
		env = append(env, directEnv(stack)...)
	}
	return env
}

// directEnv points an API process at the nodes' own addresses, past the
// poolers, and says there is none in the way.
func directEnv(stack *devstack.Stack) []string {
	replicas := make([]string, len(stack.Replicas))
	for i, r := range stack.Replicas {
		replicas[i] = r.Name + "=" + r.URL
	}
	return []string{
		"DATABASE_URL=" + stack.Primary.URL,
		"DATABASE_REPLICA_URLS=" + strings.Join(replicas, ","),
		"DATABASE_POOLER=none",
	}
}

// poolerCPU is the CPU time of every pgbouncer of the stack (0 without).
func poolerCPU(stack *devstack.Stack) (time.Duration, error) {
	var total time.Duration
	for _, n := range append([]*devstack.Node{stack.Primary}, stack.Replicas...) {
		b := n.Pooler()
		if b == nil {
			continue
		}
		c, err := proccpu.Of(b.Pid(), false) // one process, no children
		if err != nil {
			return 0, fmt.Errorf("pgbouncer for %s: %w", n.Name, err)
		}
		total += c
	}
	return total, nil
}

// pgbouncerVersion is the first line of `pgbouncer --version` ("PgBouncer
// 1.18.0"), the binary looked for where devstack looks.
func pgbouncerVersion(ctx context.Context) (string, error) {
	bin := ""
	for _, p := range []string{"/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"} {
		if _, err := os.Stat(p); err == nil {
			bin = p
			break
		}
	}
	if bin == "" {
		p, err := exec.LookPath("pgbouncer")
		if err != nil {
			return "", errors.New("pgbouncer is not installed (apt-get install pgbouncer)")
		}
		bin = p
	}
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("pgbouncer --version: %w", err)
	}
	first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return strings.TrimSpace(first), nil
}

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"

	"github.com/ryw-go/ryw/internal/devstack"
	"github.com/ryw-go/ryw/internal/loadgen"
)

// The fault scenarios (-scenarios) measure lsn mode while something is
// wrong between the API and replica1, each against a run with nothing
// wrong, in the same process on the same cluster:
//
//	none       the baseline
//	blackhole  replica1 swallows every packet for the whole run (no RST)
//	slow       replica1 answers 200 ms later (100 ms each way)
//	flood      200 requests per second carry a forged X-RYW-Token
//
// The API reaches replica1 through an in-process proxy (toxiproxy), so that
// only its link is cut or slowed.
var scenarioNames = []string{"none", "blackhole", "slow", "flood"}

// floodRate is how many forged-token requests per second the flood sends.
const floodRate = 200

// scenario is one run's measurements.
type scenario struct {
	name  string
	res   result
	ops   int
	secs  float64
	flaps int // times replica1 was taken out of rotation
	flood int // forged requests sent
}

func runScenarios(ctx context.Context, stack *devstack.Stack, o options, stderr io.Writer) ([]scenario, error) {
	var out []scenario
	for _, name := range o.scenarios {
		fmt.Fprintf(stderr, "rywbench: lsn mode, scenario %s, %d users for %s\n", name, o.users, o.duration)
		sc, err := runScenario(ctx, stack, name, o, stderr)
		if err != nil {
			return nil, err
		}
		out = append(out, sc)
	}
	return out, nil
}

func runScenario(ctx context.Context, stack *devstack.Stack, name string, o options, stderr io.Writer) (scenario, error) {
	r1 := stack.Replicas[0]
	proxy, r1URL, err := devstack.StartProxyForURL(r1.URL)
	if err != nil {
		return scenario{}, err
	}
	defer proxy.Close()
	replicas := []string{r1.Name + "=" + r1URL}
	for _, r := range stack.Replicas[1:] {
		replicas = append(replicas, r.Name+"="+r.URL)
	}
	logs := &devstack.Buffer{}
	apis, err := stack.StartAPI(ctx, devstack.APIOptions{
		Binary: o.apiBin, Output: io.MultiWriter(logs, filterErrors{stderr}),
		Env: []string{"RYW_MODE=lsn", "LOG_LEVEL=warn", "DATABASE_REPLICA_URLS=" + strings.Join(replicas, ",")},
	})
	if err != nil {
		return scenario{}, err
	}
	api := apis[0]
	defer api.Stop(context.WithoutCancel(ctx))
	// Wait until replica1 serves, then break its link.
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, h, _, err := loadgen.Call(ctx, http.DefaultClient, http.MethodGet, api.URL+"/api/products", uuid.New(), "")
		if err == nil && h.Get("X-Served-By") == r1.Name {
			break
		}
		if time.Now().After(deadline) {
			return scenario{}, fmt.Errorf("scenario %s: %s never served", name, r1.Name)
		}
		time.Sleep(20 * time.Millisecond)
	}
	switch name {
	case "blackhole":
		err = proxy.Blackhole()
	case "slow":
		err = proxy.Latency(100 * time.Millisecond)
	}
	if err != nil {
		return scenario{}, err
	}
	var forged atomic.Int64
	fctx, stopFlood := context.WithCancel(ctx)
	if name == "flood" {
		go flood(fctx, api.URL, &forged)
	}
	start := time.Now()
	res := measure(ctx, api.URL, name, o)
	secs := time.Since(start).Seconds()
	stopFlood()
	_ = proxy.Heal()
	return scenario{
		name: name, res: res, ops: res.reads + len(res.writeLatency), secs: secs,
		flaps: takenOut(logs.String(), r1.Name),
		flood: int(forged.Load()),
	}, nil
}

// takenOut counts the times the API logged the replica leaving rotation.
func takenOut(logs, replica string) int {
	n := 0
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, "replica out of rotation") && strings.Contains(line, "replica="+replica+" ") {
			n++
		}
	}
	return n
}

// flood sends floodRate requests per second, each with a forged token far
// ahead of any real position, until ctx ends.
func flood(ctx context.Context, api string, sent *atomic.Int64) {
	client := &http.Client{Timeout: 10 * time.Second}
	tick := time.NewTicker(time.Second / floodRate)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		go func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, api+"/api/me", nil)
			req.Header.Set("X-Demo-UserId", uuid.NewString())
			req.Header.Set("X-RYW-Token", fmt.Sprintf("FFFFFFFF/%08X", rand.Uint32()))
			if resp, err := client.Do(req); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			sent.Add(1)
		}()
	}
}

// filterErrors passes on only the API's error lines, so that a scenario's
// expected warnings (a replica out of rotation) do not flood the terminal.
type filterErrors struct{ w io.Writer }

func (f filterErrors) Write(p []byte) (int, error) {
	for _, line := range bytes.SplitAfter(p, []byte("\n")) {
		if bytes.Contains(line, []byte("level=ERROR")) {
			f.w.Write(line)
		}
	}
	return len(p), nil
}

func renderScenarios(b *bytes.Buffer, scs []scenario, o options) {
	if len(scs) == 0 {
		return
	}
	fmt.Fprintf(b, "\nFaults between the API and replica1, lsn mode, %d users for %s each (RYW_REPLICA_TIMEOUT 1s, the default):\n\n", o.users, o.duration)
	base := scs[0]
	w := tabwriter.NewWriter(b, 0, 0, 1, ' ', tabwriter.Debug)
	fmt.Fprintln(w, "| scenario\t requests/s\t vs none\t read p50\t read p99\t read max\t write p99\t served by replicas\t violations\t errors\t replica1 taken out\t")
	fmt.Fprintln(w, "|---\t---\t---\t---\t---\t---\t---\t---\t---\t---\t---\t")
	for _, s := range scs {
		rate := float64(s.ops) / s.secs
		fmt.Fprintf(w, "| %s\t %.0f\t %s\t %s\t %s\t %s\t %s\t %.1f%%\t %d\t %d\t %d\t\n", s.name, rate,
			ratio(rate, float64(base.ops)/base.secs),
			ms(percentile(s.res.readLatency, .5)), ms(percentile(s.res.readLatency, .99)), ms(percentile(s.res.readLatency, 1)),
			ms(percentile(s.res.writeLatency, .99)), share(s.res), s.res.violations, s.res.errors, s.flaps)
	}
	w.Flush()
	for _, s := range scs {
		if s.flood > 0 {
			fmt.Fprintf(b, "\nThe flood sent %d forged-token requests (%.0f/s) besides the users' requests.\n", s.flood, float64(s.flood)/s.secs)
		}
	}
}

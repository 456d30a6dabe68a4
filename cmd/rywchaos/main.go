// Command rywchaos is the project's history checker: it runs many users over
// two or more API instances on a real cluster (devstack) while it injects
// faults, records every request, and checks the history: per mode, the
// read-your-writes violations, the monotonic-read regressions, the 5xx
// answers, the lost writes and the share of own-write reads that replicas
// served.
//
// Each user loops: save the profile with the next version ("v<n>") through
// a random instance, then read it back 1-3 times through random instances.
// Half the users send no token back (like a client without cookies): the
// server alone must get read-your-writes right. The other half are
// sessions: they send back the token of each response, as a browser sends
// its cookie, and also read the catalog, whose product 1 a writer on the
// primary keeps changing ("v<n>" in its description).
//
// The history is checked after the run:
//
//   - read-your-writes: a read of a user's profile that shows a version
//     below the last one a write acknowledged before the read was sent is a
//     violation (writes a failover lost excepted, see below);
//   - monotonic reads: per session, the versions of the profile and of the
//     catalog it observes never decrease, across instances and endpoints
//     (again, but for data a failover lost);
//   - at the end the primary holds each user's last acknowledged version
//     that was not lost.
//
// Scenario faults, on a schedule that repeats through the run:
//
//   - a random replica's replay paused for 0-2 s, again and again;
//   - a replica killed (immediate shutdown) and restarted;
//   - Redis killed and restarted empty (-redis single); the master killed,
//     the sentinels promoting its replica and the old master back as a
//     replica (-redis sentinel); a master handing over to its replica
//     (CLUSTER FAILOVER), then another killed and replaced by its replica,
//     and back as a replica (-redis cluster; with -redis-replicas 0, a
//     master restarted empty);
//   - Redis unreachable from the last instance only (a blackholing proxy;
//     single Redis only: with Sentinel or Cluster the clients reach the
//     nodes at the addresses the sentinels and the cluster give).
//
// Scenario failover, on a stack of its own per mode, under the same load
// and replay pauses: a third of the way through, replica2 and then replica1
// are cut off from the primary (-partition), the primary is killed, a
// replica is promoted (-promote, default the most advanced: replica1) and
// the other is re-pointed at it. -promote replica2 promotes the less
// advanced one, and leaves replica1 diverged. The data of the promoted replica before
// its promotion tells which acknowledged writes the failover lost. The
// checker then also requires: no read sent after the promotion shows lost
// data or is served by a replica that diverged; the API writes again
// without a restart (503 during the switch, never another 5xx); and the
// instances count at least one lost write (ryw_lost_writes_total) for each
// user who lost one. With -sync-standbys 1 no acknowledged write may be
// lost at all.
//
// RYW_MODE=off is the control: the same run must report violations and
// regressions. Traffic stays on loopback; the run ends by itself.
//
// Usage:
//
//	rywchaos [-modes time,lsn,off] [-ops 100000] [-users 60] [-instances 2]
//	         [-max-duration 10m] [-api-bin PATH] [-out FILE]
//	         [-scenario faults|failover] [-promote replica1] [-sync-standbys 1]
//	         [-pooler none|transaction|session] [-least-privilege]
//	         [-redis single|sentinel|cluster] [-redis-replicas 1]
//
// The topology flags are devstack's (cmd/devstack): make chaos
// ARGS="-redis sentinel" runs the schedule on Redis Sentinel.
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ryw-go/ryw/internal/devstack"
	"github.com/ryw-go/ryw/internal/loadgen"
	"github.com/ryw-go/ryw/internal/proccpu"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ok, err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "rywchaos:", err)
		os.Exit(1)
	}
	if !ok {
		os.Exit(2)
	}
}

type options struct {
	modes        []string
	ops          int
	users        int
	instances    int
	maxDuration  time.Duration
	faultEvery   time.Duration
	cycles       int      // faults scenario: run for this many full cycles instead of -ops requests
	faults       []string // faults scenario: the faults that run (faultNames; nil: all)
	apiBin       string
	out          string
	scenario     string
	promote      string
	syncStandbys int
	partition    time.Duration
	apiLogLevel  string
	pprofAddr    string           // PPROF_ADDR of the first API instance; the others get none
	topology     devstack.Options // its Pooler, Redis, RedisReplicas and LeastPrivilege (devstack.TopologyFlags)
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	var modes string
	fs := flag.NewFlagSet("rywchaos", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&modes, "modes", "time,lsn,off", "RYW_MODEs to run, in order; off is the control and must see violations; a mode may repeat (time,lsn,lsn,time), and the report then gives its medians and compares it with the first mode, pair of runs by pair, with a 95% interval")
	fs.IntVar(&o.ops, "ops", 100_000, "HTTP requests per mode")
	fs.IntVar(&o.users, "users", 60, "concurrent users (half of them sessions that send their token back)")
	fs.IntVar(&o.instances, "instances", 2, "API instances; the last one loses Redis during the partition fault")
	fs.DurationVar(&o.maxDuration, "max-duration", 10*time.Minute, "stop a mode after this long even if -ops is not reached")
	fs.DurationVar(&o.faultEvery, "fault-every", 8*time.Second, "faults scenario: length of one cycle of the kill, Redis restart and partition faults")
	faults := fs.String("faults", strings.Join(faultNames, ","), "faults scenario: the faults to inject, of "+strings.Join(faultNames, ", ")+" (replay paused, a replica killed, Redis restarted empty or failed over, Redis cut off from the last instance); the cycle keeps its length whatever it leaves out, so that -cycles compares, and off mode is judged as the control only with pause")
	fs.IntVar(&o.cycles, "cycles", 0, "faults scenario: end each mode's run after this many full fault cycles instead of after -ops requests, so that every mode meets the same faults per second and the requests it completes compare (0: -ops)")
	fs.StringVar(&o.apiBin, "api-bin", "", "API executable (default: go build ./cmd/api)")
	fs.StringVar(&o.out, "out", "", "also write the Markdown report to this file")
	fs.StringVar(&o.scenario, "scenario", "faults", "faults (the fault cycle), failover (the primary dies and a replica is promoted, once per mode) or none (the same load without faults: the offload a healthy cluster gets)")
	fs.StringVar(&o.promote, "promote", "", "failover: the replica to promote (default: the one that received the most WAL, replica1); replica2 is less advanced, and leaves replica1 diverged")
	fs.IntVar(&o.syncStandbys, "sync-standbys", 0, "failover: synchronous_standby_names = ANY n (...); with 1, no acknowledged write may be lost")
	fs.StringVar(&o.apiLogLevel, "api-log-level", "error", "the API instances' LOG_LEVEL (their logs go to stderr)")
	fs.StringVar(&o.pprofAddr, "pprof", "", "PPROF_ADDR for the first API instance of each mode (the others get none), to profile it under the mixed load (docs/PROFILING.md)")
	fs.DurationVar(&o.partition, "partition", time.Second, "failover: how long the replicas are cut off from the primary, one after the other, before it dies")
	topology := devstack.AddTopologyFlags(fs)
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if err := topology.Apply(&o.topology); err != nil {
		return o, err
	}
	var err error
	if o.modes, err = loadgen.ParseModes(modes); err != nil {
		return o, err
	}
	if o.faults, err = parseFaults(*faults); err != nil {
		return o, err
	}
	setFaults := false
	fs.Visit(func(f *flag.Flag) { setFaults = setFaults || f.Name == "faults" })
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	case o.ops < 100:
		return o, fmt.Errorf("-ops must be at least 100, got %d", o.ops)
	case o.users < 2 || o.users > 1000:
		return o, fmt.Errorf("-users must be 2..1000, got %d", o.users)
	case o.instances < 2 || o.instances > 8:
		return o, fmt.Errorf("-instances must be 2..8, got %d", o.instances)
	case o.maxDuration <= 0 || o.maxDuration > time.Hour:
		return o, fmt.Errorf("-max-duration must be positive and at most 1h, got %s", o.maxDuration)
	case o.faultEvery < 2*time.Second:
		return o, fmt.Errorf("-fault-every must be at least 2s, got %s", o.faultEvery)
	case o.cycles < 0 || o.cycles > 100:
		return o, fmt.Errorf("-cycles must be 0..100, got %d", o.cycles)
	case o.cycles > 0 && o.scenario != "faults":
		return o, fmt.Errorf("-cycles needs -scenario faults, got %q", o.scenario)
	case setFaults && o.scenario != "faults":
		return o, fmt.Errorf("-faults needs -scenario faults, got %q", o.scenario)
	case o.scenario != "faults" && o.scenario != "failover" && o.scenario != "none":
		return o, fmt.Errorf("-scenario must be faults, failover or none, got %q", o.scenario)
	case o.promote != "" && o.promote != "replica1" && o.promote != "replica2":
		return o, fmt.Errorf("-promote must be replica1 or replica2, got %q", o.promote)
	case o.syncStandbys < 0 || o.syncStandbys > 2:
		return o, fmt.Errorf("-sync-standbys must be 0..2, got %d", o.syncStandbys)
	case o.partition < 0 || o.partition > time.Minute:
		return o, fmt.Errorf("-partition must be 0..1m, got %s", o.partition)
	}
	return o, nil
}

// faultNames are the faults scenario's faults, as -faults names them.
var faultNames = []string{"pause", "kill", "redis", "partition"}

// parseFaults parses -faults: a comma-separated list of faultNames, each
// at most once.
func parseFaults(list string) ([]string, error) {
	var out []string
	for f := range strings.SplitSeq(list, ",") {
		f = strings.TrimSpace(f)
		switch {
		case !slices.Contains(faultNames, f):
			return nil, fmt.Errorf("-faults: %q is not one of %s", f, strings.Join(faultNames, ", "))
		case slices.Contains(out, f):
			return nil, fmt.Errorf("-faults: %s given twice", f)
		}
		out = append(out, f)
	}
	return out, nil
}

// injects reports whether the run injects fault (one of faultNames): in
// the faults scenario, if -faults names it; the failover scenario pauses
// replay, and no fault runs without faults.
func (o options) injects(fault string) bool {
	switch o.scenario {
	case "none":
		return false
	case "failover":
		return fault == "pause"
	}
	return o.faults == nil || slices.Contains(o.faults, fault)
}

// run runs every mode and prints the report; ok is false when the history
// check failed (see verdict).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) (ok bool, err error) {
	// The API processes' output and this run's progress share stderr.
	stderr = devstack.Synchronized(stderr)
	o, err := parseFlags(args, stderr)
	if err != nil {
		return false, err
	}
	bin, cleanup, err := loadgen.APIBinary(ctx, o.apiBin, "rywchaos", stderr)
	if err != nil {
		return false, err
	}
	defer cleanup()
	o.apiBin = bin

	var results []result
	var shared *devstack.Stack
	for _, mode := range o.modes {
		stack := shared
		if stack == nil {
			// The failover scenario changes the cluster: a stack per mode.
			fmt.Fprintln(stderr, "rywchaos: starting a primary, 2 replicas and Redis:", devstack.DescribeTopology(o.topology))
			opts := o.topology
			opts.Replicas, opts.Migrate = 2, true
			if stack, err = devstack.Start(ctx, opts); err != nil {
				return false, err
			}
			if o.scenario != "failover" {
				shared = stack
			}
		}
		fmt.Fprintf(stderr, "rywchaos: %s mode, %s scenario, %d users over %d instances, %s\n", mode, o.scenario, o.users, o.instances, o.runLength())
		res, err := runMode(ctx, stack, mode, o, stderr)
		if stack != shared {
			stack.Close()
		}
		if err != nil {
			return false, err
		}
		results = append(results, res)
	}
	if shared != nil {
		shared.Close()
	}
	report := render(results, o)
	fmt.Fprint(stdout, report)
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(report), 0o644); err != nil {
			return false, err
		}
	}
	return verdict(results, o) == "", nil
}

// verdict says what is wrong with the results, or "" if nothing is.
func verdict(results []result, o options) string {
	var problems []string
	for _, r := range results {
		if r.ops == 0 || r.ownReads == 0 || r.sessionReads == 0 {
			problems = append(problems, fmt.Sprintf("%s mode checked too little: %d requests, %d own-write reads, %d session reads", r.mode, r.ops, r.ownReads, r.sessionReads))
		}
		if r.mode == "off" && !o.injects("pause") {
			// Without replay paused the control may or may not catch a
			// replica behind: such a run measures offload or a fault's
			// cost, not the checker.
			continue
		}
		if r.mode == "off" {
			if r.violations == 0 {
				problems = append(problems, "the control (off) saw no read-your-writes violation")
			}
			if r.regressions == 0 {
				problems = append(problems, "the control (off) saw no monotonic-read regression")
			}
			continue
		}
		if r.violations > 0 || r.regressions > 0 || r.status5xx > 0 || r.lostFinal > 0 || r.divergent > 0 {
			problems = append(problems, fmt.Sprintf("%s mode: %d violations, %d regressions, %d 5xx, %d writes missing at the end, %d reads of lost or diverged data",
				r.mode, r.violations, r.regressions, r.status5xx, r.lostFinal, r.divergent))
		}
		if r.failover == nil {
			continue
		}
		switch f := r.failover; {
		case o.syncStandbys == 0 && f.lostUsers == 0:
			problems = append(problems, r.mode+" mode: the asynchronous failover lost no write, so finding lost writes was not tested (a longer -partition)")
		case !f.recovered:
			problems = append(problems, r.mode+" mode: no write succeeded after the failover")
		case f.counted < float64(f.lostUsers):
			problems = append(problems, fmt.Sprintf("%s mode: %d users lost a write, the instances counted %.0f", r.mode, f.lostUsers, f.counted))
		case o.syncStandbys > 0 && f.lostAcked > 0:
			problems = append(problems, fmt.Sprintf("%s mode: %d acknowledged writes lost with a synchronous quorum", r.mode, f.lostAcked))
		}
	}
	return strings.Join(problems, "; ")
}

// slowAnswer is the time from which the report counts an answer as slow.
const slowAnswer = 500 * time.Millisecond

// result is one mode's history, checked.
type result struct {
	mode         string
	ops          int
	writes       int // acknowledged
	ownReads     int
	replicaReads int
	violations   int
	sessionReads int // reads of session users, checked for monotonic reads
	regressions  int
	status5xx    int // 503 during a failover excepted
	unavailable  int // 503 during a failover
	otherErrors  int // transport errors and 4xx, which a correct client never causes
	lostFinal    int // users whose last acknowledged, not lost, version is not on the primary at the end
	divergent    int // reads after a promotion that showed lost data, or came from a diverged replica
	elapsed      time.Duration
	p99          time.Duration // of every request's answer (or failure)
	// slow counts the answers that took slowAnswer or more, by kind,
	// instance and routing reason: where the tail comes from.
	slow map[string]int
	// spent is the answer time summed by kind and routing reason: in a
	// closed loop, what the users waited for instead of sending more.
	spent map[string]spent
	// byFault is the answer time summed by the faults in place when each
	// request started.
	byFault map[string]spent
	faults  map[string]int
	reasons map[string]int
	// settles counts, by outcome, the instances' reads on the primary that
	// settled first after a session's reads on a replica
	// (ryw_primary_settles_total).
	settles map[string]int
	// cpu is the CPU time each group of processes used over the run
	// (cpuGroups), sampled so that killed and restarted nodes count.
	cpu      map[string]time.Duration
	problems []string
	failover *failoverInfo
}

// failoverInfo is what the failover scenario knows of its failover.
type failoverInfo struct {
	promoted   string
	diverged   []string
	timeline   int       // the promoted node's
	promotedAt time.Time // when pg_promote returned
	// partitionAt is when the first replica was cut off: from then until a
	// few seconds after the switch, 503s are expected.
	partitionAt time.Time
	took        time.Duration
	// promotion is how long the kill and the promotion took; took adds
	// re-pointing the other replicas until they stream.
	promotion time.Duration
	// switchData is each user's version, and the catalog's, on the
	// promoted replica just before its promotion.
	switchData map[uuid.UUID]int
	catalog    int
	lostAcked  int     // acknowledged writes (profile saves and catalog changes) the failover lost
	lostUsers  int     // users who lost an acknowledged write
	counted    float64 // ryw_lost_writes_total{found_in="tracker"}, over the instances
	certain    float64 // those with certain="true"
	recovered  bool
}

func runMode(ctx context.Context, stack *devstack.Stack, mode string, o options, log io.Writer) (result, error) {
	// The last instance reaches a single Redis through a proxy, which the
	// cycle cuts. With Sentinel or Cluster the clients connect to the
	// addresses the sentinels and the nodes give: no proxy can stand in.
	var proxy *devstack.Proxy
	var redisURL string
	if stack.RedisTopology() == devstack.RedisSingle {
		var err error
		if proxy, redisURL, err = devstack.StartProxyForURL(stack.RedisURL()); err != nil {
			return result{}, err
		}
		defer proxy.Close()
	}
	env := []string{"RYW_MODE=" + mode, "LOG_LEVEL=" + o.apiLogLevel, "PPROF_ADDR="}
	if o.scenario == "failover" {
		env = append(env, "DATABASE_URL="+stack.PrimaryURLs())
		if err := stack.SetSynchronousStandbys(ctx, o.syncStandbys); err != nil {
			return result{}, err
		}
	}
	apis, err := stack.StartAPI(ctx, devstack.APIOptions{
		Binary: o.apiBin, Instances: o.instances, Output: log, Env: env,
		InstanceEnv: func(i int) []string {
			var env []string
			if i == 0 && o.pprofAddr != "" {
				env = append(env, "PPROF_ADDR="+o.pprofAddr)
			}
			if i == o.instances-1 && o.scenario == "faults" && proxy != nil {
				env = append(env, "REDIS_URL="+redisURL)
			}
			return env
		},
	})
	defer func() {
		for _, a := range apis {
			_ = a.Stop(context.WithoutCancel(ctx))
		}
	}()
	if err != nil {
		return result{}, err
	}
	var urls []string
	for _, a := range apis {
		urls = append(urls, a.URL)
	}

	res := result{mode: mode, faults: map[string]int{}, reasons: map[string]int{}}
	var cycled atomic.Bool
	h := &history{budget: int64(o.ops), cycled: &cycled}
	if o.cycles > 0 {
		h.budget = 0 // the cycles alone end the run
	}
	runCtx, stop := context.WithTimeout(ctx, o.maxDuration)
	defer stop()
	inj := &injector{stack: stack, proxy: proxy, log: log, counts: map[string]int{}, cycled: &cycled}
	// The catalog's versions go on from what an earlier mode left on a
	// shared stack.
	var desc string
	if err := stack.Primary.QueryRow(ctx, []any{&desc}, "SELECT description FROM products WHERE id = 1"); err != nil {
		return result{}, err
	}
	catalog := catalogWriter{next: version(desc) + 1}
	var background sync.WaitGroup
	bgCtx, stopBackground := context.WithCancel(runCtx)
	background.Go(func() { catalog.run(bgCtx, stack.PrimaryURLs()) })
	pausesCtx, stopPauses := context.WithCancel(bgCtx)
	var pauses sync.WaitGroup
	if o.injects("pause") {
		pauses.Go(func() { inj.pauses(pausesCtx) })
	}
	var fo *failoverInfo
	switch o.scenario {
	case "none":
		cycled.Store(true) // nothing to wait for: the budget ends the run
	case "faults":
		background.Go(func() { inj.cycle(bgCtx, o, max(1, o.cycles)) })
	default:
		// The failover is the one fault of the cycle: the run goes on
		// until it is done, and a while after.
		background.Go(func() {
			for h.spent.Load() < h.budget/3 && bgCtx.Err() == nil {
				sleep(bgCtx, 20*time.Millisecond)
			}
			stopPauses()
			pauses.Wait()
			if bgCtx.Err() != nil {
				return
			}
			var err error
			if fo, err = inj.failover(bgCtx, o); err != nil {
				inj.failed("failover", err)
				stop()
				return
			}
			pctx, cancel := context.WithCancel(bgCtx)
			defer cancel()
			pauses.Go(func() { inj.pauses(pctx) })
			// A third of the budget more after the switch: the users read
			// and write on the new primary.
			for after := h.spent.Load() + h.budget/3; h.spent.Load() < after && bgCtx.Err() == nil; {
				sleep(bgCtx, 20*time.Millisecond)
			}
			cycled.Store(true)
			<-bgCtx.Done()
		})
	}

	client := &http.Client{
		Timeout:   15 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: o.users, MaxConnsPerHost: 2 * o.users},
	}
	meter := cpuMeter(stack, apis)
	meter.Start(cpuSample)
	start := time.Now()
	users := make([]*userState, o.users)
	var wg sync.WaitGroup
	for i := range users {
		users[i] = &userState{id: uuid.New(), session: i%2 == 0}
		wg.Go(func() { h.user(runCtx, client, urls, users[i]) })
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	meter.Stop()
	res.cpu = meter.Used()
	res.settles = settlesCounted(context.WithoutCancel(ctx), client, urls)
	if fo != nil {
		fo.counted, fo.certain = lostCounted(context.WithoutCancel(ctx), client, urls)
	}
	stopBackground()
	stopPauses()
	background.Wait()
	pauses.Wait()
	if err := runCtx.Err(); err != nil && o.scenario == "failover" && fo == nil {
		return res, errors.New("the failover did not complete")
	}
	if err := inj.heal(context.WithoutCancel(ctx)); err != nil {
		return res, err
	}
	res.faults = inj.counts
	res.failover = fo
	check(&res, users, catalog.acked(), fo)
	// Lost writes: the primary must hold at least each user's last
	// acknowledged version that a failover did not lose.
	for _, u := range users {
		want := u.lastKept(fo)
		if want == 0 {
			continue
		}
		var name string
		if err := stack.Primary.QueryRow(context.WithoutCancel(ctx), []any{&name}, "SELECT name FROM users WHERE id = $1", u.id); err != nil {
			return res, fmt.Errorf("read back user %s: %w", u.id, err)
		}
		if v := version(name); v < want {
			res.lostFinal++
			res.problem("lost write: user %s acknowledged v%d, the primary holds %q", u.id, want, name)
		}
	}
	res.ops, res.status5xx, res.unavailable, res.otherErrors = int(h.ops.Load()), 0, 0, 0
	var took []time.Duration
	res.slow, res.spent, res.byFault = map[string]int{}, map[string]spent{}, map[string]spent{}
	inj.mu.Lock()
	spans := slices.Clone(inj.spans)
	inj.mu.Unlock()
	for _, u := range users {
		for _, e := range u.events {
			d := e.end.Sub(e.start)
			took = append(took, d)
			reason := e.reason
			if reason == "" {
				reason = "no reason given"
			}
			key := fmt.Sprintf("%s (%s)", e.kind, reason)
			res.spent[key] = res.spent[key].add(d)
			during := faultsAt(spans, e.start)
			res.byFault[during] = res.byFault[during].add(d)
			if d >= slowAnswer {
				res.slow[fmt.Sprintf("%s via instance %d (%s)", e.kind, slices.Index(urls, e.api)+1, reason)]++
			}
			if e.acked() {
				res.writes++
			}
			switch {
			case e.status == http.StatusServiceUnavailable && fo != nil && fo.duringSwitch(e.start):
				res.unavailable++
			case e.status >= 500:
				res.status5xx++
				res.problem("%s via %s: %d (served by %s, %s)", e.kind, e.api, e.status, e.servedBy, e.reason)
			case e.err != nil || (e.status != http.StatusOK && e.status != http.StatusNotFound):
				res.otherErrors++
				res.problem("%s via %s: %d %v", e.kind, e.api, e.status, e.err)
			}
		}
	}
	if len(took) > 0 {
		slices.Sort(took)
		res.p99 = took[len(took)*99/100]
	}
	return res, ctx.Err()
}

// duringSwitch reports whether a request sent at t met the failover: from
// the partition until 5 s after the replicas were re-pointed.
func (f *failoverInfo) duringSwitch(t time.Time) bool {
	return !t.Before(f.partitionAt) && t.Before(f.promotedAt.Add(f.took-f.promotion+5*time.Second))
}

// lostCounted sums ryw_lost_writes_total{found_in="tracker"} over the
// instances, and those lost for certain.
func lostCounted(ctx context.Context, client *http.Client, apis []string) (total, certain float64) {
	sums := metricSums(ctx, client, apis)
	for _, c := range []string{"true", "false"} {
		n := sums[`ryw_lost_writes_total{certain="`+c+`",found_in="tracker"}`]
		total += n
		if c == "true" {
			certain += n
		}
	}
	return total, certain
}

// settleOutcomes are the outcomes of ryw_primary_settles_total.
var settleOutcomes = []string{"at-once", "waited", "unsettled"}

// settlesCounted sums ryw_primary_settles_total over the instances, by
// outcome.
func settlesCounted(ctx context.Context, client *http.Client, apis []string) map[string]int {
	sums := metricSums(ctx, client, apis)
	out := map[string]int{}
	for _, o := range settleOutcomes {
		if n := sums[`ryw_primary_settles_total{outcome="`+o+`"}`]; n > 0 {
			out[o] = int(n)
		}
	}
	return out
}

// metricSums reads every instance's /metrics and sums each sample over
// them, by its name and labels as exposed ("name{label="value",...}"). An
// instance that does not answer adds nothing.
func metricSums(ctx context.Context, client *http.Client, apis []string) map[string]float64 {
	sums := map[string]float64{}
	for _, api := range apis {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, api+"/metrics", nil)
		if err != nil {
			continue
		}
		resp, err := client.Do(req)
		if err != nil {
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, line := range strings.Split(string(body), "\n") {
			if strings.HasPrefix(line, "#") {
				continue
			}
			i := strings.LastIndexByte(line, ' ')
			if i < 0 {
				continue
			}
			var n float64
			if _, err := fmt.Sscanf(line[i+1:], "%g", &n); err == nil {
				sums[line[:i]] += n
			}
		}
	}
	return sums
}

func (r *result) problem(format string, args ...any) {
	if len(r.problems) < 10 {
		r.problems = append(r.problems, fmt.Sprintf(format, args...))
	}
}

// runLength says how long each mode's run lasts.
func (o options) runLength() string {
	if o.cycles > 0 {
		return fmt.Sprintf("%d full fault cycles", o.cycles)
	}
	return fmt.Sprintf("%d requests", o.ops)
}

// history hands out the budget of requests.
type history struct {
	budget int64
	spent  atomic.Int64
	ops    atomic.Int64
	// cycled is set once every fault of the cycle has been injected: the
	// run goes on until then, however small the budget.
	cycled *atomic.Bool
}

// more reports whether the user should send another request.
func (h *history) more() bool {
	return h.spent.Add(1) <= h.budget || !h.cycled.Load()
}

// event is one request of a user, as the checker saw it.
type event struct {
	kind       string // "write", "read" (the user's profile) or "catalog"
	version    int    // written, or shown
	status     int
	err        error
	start, end time.Time
	api        string
	servedBy   string
	reason     string
	timeline   int // a write's, from its token
}

type userState struct {
	id      uuid.UUID
	session bool   // sends back the token of each response
	token   string // the last token a response gave
	events  []event
}

// acked reports whether e is a write that was acknowledged.
func (e event) acked() bool { return e.kind == "write" && e.err == nil && e.status == http.StatusOK }

// lost reports whether an acknowledged write was lost in the failover:
// acknowledged on an earlier timeline (its token says which) than the
// promoted node's, above what the promoted node had.
func (u *userState) lost(fo *failoverInfo, e event) bool {
	if fo == nil || !e.acked() || e.version <= fo.switchData[u.id] {
		return false
	}
	if e.timeline == 0 {
		// No token: by the time it was acknowledged.
		return e.end.Before(fo.promotedAt)
	}
	return e.timeline < fo.timeline
}

// lastKept is the last version a write acknowledged that was not lost.
func (u *userState) lastKept(fo *failoverInfo) int {
	last := 0
	for _, e := range u.events {
		if e.acked() && !u.lost(fo, e) {
			last = max(last, e.version)
		}
	}
	return last
}

// user runs one user's loop until the budget is spent or ctx ends.
func (h *history) user(ctx context.Context, client *http.Client, apis []string, u *userState) {
	for next := 1; ctx.Err() == nil; next++ {
		if !h.more() {
			return
		}
		body := fmt.Sprintf(`{"email":"chaos@example.com","name":"v%d"}`, next)
		if !h.call(ctx, client, apis, u, "write", http.MethodPost, "/api/me/profile", body, next) {
			return
		}
		reads := 1 + rand.IntN(3)
		for i := range reads + 1 {
			kind, path := "read", "/api/me"
			if i == reads {
				if !u.session {
					break
				}
				kind, path = "catalog", "/api/products"
			}
			if !h.more() || !h.call(ctx, client, apis, u, kind, http.MethodGet, path, "", 0) {
				return
			}
		}
	}
}

// call sends one request through a random instance and records it; false
// when ctx ended.
func (h *history) call(ctx context.Context, client *http.Client, apis []string, u *userState, kind, method, path, body string, v int) bool {
	api := apis[rand.IntN(len(apis))]
	e := event{kind: kind, version: v, api: api, start: time.Now()}
	req, err := http.NewRequestWithContext(ctx, method, api+path, strings.NewReader(body))
	if err != nil {
		return false
	}
	req.Header.Set("X-Demo-UserId", u.id.String())
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if u.session && u.token != "" {
		req.Header.Set("X-RYW-Token", u.token)
	}
	resp, err := client.Do(req)
	if ctx.Err() != nil {
		return false
	}
	var raw []byte
	if err == nil {
		raw, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		e.status = resp.StatusCode
		e.servedBy, e.reason = resp.Header.Get("X-Served-By"), resp.Header.Get("X-Routing-Reason")
		if tok := resp.Header.Get("X-RYW-Token"); tok != "" {
			u.token = tok
			// s2.<system>.<write timeline>.<write LSN>...
			if f := strings.Split(tok, "."); len(f) >= 7 && kind == "write" {
				e.timeline, _ = strconv.Atoi(f[2])
			}
		}
	}
	e.end, e.err = time.Now(), err
	if err == nil && e.status == http.StatusOK && kind != "write" {
		e.version = shown(kind, raw)
	}
	h.ops.Add(1)
	u.events = append(u.events, e)
	return true
}

// shown is the version a read's body shows: the profile's name, or product
// 1's description.
func shown(kind string, body []byte) int {
	if kind == "read" {
		var p struct{ Name string }
		_ = json.Unmarshal(body, &p)
		return version(p.Name)
	}
	var list struct {
		Products []struct {
			ID          int64
			Description string
		}
	}
	_ = json.Unmarshal(body, &list)
	for _, p := range list.Products {
		if p.ID == 1 {
			return version(p.Description)
		}
	}
	return 0
}

// check goes through the recorded history (see the package comment).
func check(res *result, users []*userState, catalogAcks []event, fo *failoverInfo) {
	// A catalog version the failover lost is above what the promoted node
	// had and no later than the last one the old timeline acknowledged.
	// By timeline, not by time: the promoted node takes writes a moment
	// before pg_promote returns, and the writer, retrying, commits there.
	lostCatalog := func(v int) bool {
		return fo != nil && v > fo.catalog && v <= lastOnOldTimeline(catalogAcks, fo.timeline)
	}
	divergedNode := func(e event) bool {
		return fo != nil && e.start.After(fo.promotedAt) && slices.Contains(fo.diverged, e.servedBy)
	}
	if fo != nil {
		for _, e := range catalogAcks {
			if lostCatalog(e.version) {
				fo.lostAcked++
			}
		}
	}
	for _, u := range users {
		// lostVersions are the versions the failover lost: acknowledged
		// ones (counted), and ones written before the promotion, above
		// what the promoted replica had, whose answer was not a 200 (a
		// read may have shown them before they were lost).
		lostVersions := map[int]bool{}
		for _, e := range u.events {
			if u.lost(fo, e) {
				lostVersions[e.version] = true
			}
		}
		if fo != nil {
			fo.lostAcked += len(lostVersions)
			if len(lostVersions) > 0 {
				fo.lostUsers++
			}
			for _, e := range u.events {
				if e.acked() && e.start.After(fo.promotedAt) {
					fo.recovered = true
				}
				if e.kind == "write" && !e.acked() && e.start.Before(fo.promotedAt) && e.version > fo.switchData[u.id] {
					lostVersions[e.version] = true
				}
			}
		}
		// Per endpoint, the highest version the session was shown that the
		// failover did not lose: no later read may show less.
		floor := map[string]int{}
		for i, e := range u.events {
			if e.kind == "write" || e.err != nil || e.status != http.StatusOK {
				continue
			}
			if e.kind == "read" {
				res.ownReads++
				if strings.HasPrefix(e.servedBy, "replica") {
					res.replicaReads++
				}
				res.reasons[e.reason]++
				need := 0
				for _, w := range u.events[:i] {
					if w.acked() && w.end.Before(e.start) && !lostVersions[w.version] {
						need = max(need, w.version)
					}
				}
				if e.version < need {
					res.violations++
					res.problem("user %s acknowledged v%d, read v%d from %s (%s) via %s", u.id, need, e.version, e.servedBy, e.reason, e.api)
				}
			}
			lost := lostVersions[e.version]
			if e.kind == "catalog" {
				lost = lostCatalog(e.version)
			}
			if fo != nil && e.start.After(fo.promotedAt) && (lost || divergedNode(e)) {
				res.divergent++
				res.problem("user %s: a %s sent after the promotion showed v%d, lost or diverged, from %s (%s)", u.id, e.kind, e.version, e.servedBy, e.reason)
			}
			if !u.session {
				continue
			}
			res.sessionReads++
			if e.version < floor[e.kind] {
				res.regressions++
				res.problem("session %s: %s v%d after v%d, from %s (%s) via %s", u.id, e.kind, e.version, floor[e.kind], e.servedBy, e.reason, e.api)
			}
			if !lost {
				floor[e.kind] = max(floor[e.kind], e.version)
			}
		}
	}
}

// lastOnOldTimeline is the highest version acknowledged on a timeline
// before tli.
func lastOnOldTimeline(acks []event, tli int) int {
	last := 0
	for _, e := range acks {
		if e.timeline < tli {
			last = max(last, e.version)
		}
	}
	return last
}

// catalogWriter changes product 1's description to "v<n>" on the primary,
// every 50 ms, through the multi-host URL (so that it follows a failover),
// and records what was acknowledged, with the timeline of the server that
// committed it.
type catalogWriter struct {
	next int // the first version to write
	mu   sync.Mutex
	acks []event
}

func (c *catalogWriter) run(ctx context.Context, url string) {
	var conn *pgx.Conn
	var unreplicated atomic.Bool
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	for n := c.next; sleep(ctx, 50*time.Millisecond); n++ {
		if conn == nil || conn.IsClosed() {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			conn = nil
			if cfg, err := pgx.ParseConfig(url); err == nil {
				cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
					if strings.Contains(n.Message, "synchronous replication") {
						unreplicated.Store(true)
					}
				}
				if conn, err = pgx.ConnectConfig(cctx, cfg); err != nil {
					conn = nil
				}
			}
			cancel()
			if conn == nil {
				continue
			}
		}
		unreplicated.Store(false)
		wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		// A WAL file's name starts with the timeline, in hex.
		var file string
		err := conn.QueryRow(wctx, "UPDATE products SET description = $1 WHERE id = 1 RETURNING pg_walfile_name(pg_current_wal_insert_lsn())", "v"+strconv.Itoa(n)).Scan(&file)
		cancel()
		var tli int64
		if err == nil {
			tli, err = strconv.ParseInt(file[:8], 16, 32)
		}
		if err == nil && unreplicated.Load() {
			// "canceling wait for synchronous replication ...: the
			// transaction has already committed locally": the server
			// answers the commit with a warning when its wait for the
			// standbys is cut short (here, by the deadline's cancel
			// request). The write is on the old primary only: not
			// acknowledged as a synchronous quorum acknowledges.
			err = errors.New("committed locally, not replicated")
		}
		if err != nil {
			conn.Close(context.Background())
			conn = nil
			continue
		}
		c.mu.Lock()
		c.acks = append(c.acks, event{kind: "write", version: n, status: http.StatusOK, end: time.Now(), timeline: int(tli)})
		c.mu.Unlock()
	}
}

func (c *catalogWriter) acked() []event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.acks)
}

func version(name string) int {
	var v int
	fmt.Sscanf(name, "v%d", &v)
	return v
}

// injector puts faults into the cluster and takes them out again.
type injector struct {
	stack *devstack.Stack
	proxy *devstack.Proxy
	log   io.Writer

	mu          sync.Mutex
	counts      map[string]int
	spans       []faultSpan  // when each fault was in place
	redisFaults int          // Redis faults injected so far (Cluster alternates)
	cycled      *atomic.Bool // set after the cycles the run needs
}

// count notes a fault injected.
func (f *injector) count(fault string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.counts[fault]++
}

// faultSpan is a time a fault was in place.
type faultSpan struct {
	fault      string
	start, end time.Time
}

// during notes that fault is in place from now until the returned func is
// called.
func (f *injector) during(fault string) (over func()) {
	start := time.Now()
	return func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.spans = append(f.spans, faultSpan{fault, start, time.Now()})
	}
}

// faultsAt names the faults in place at t, "no fault" when none was.
func faultsAt(spans []faultSpan, t time.Time) string {
	var in []string
	for _, sp := range spans {
		if !t.Before(sp.start) && t.Before(sp.end) && !slices.Contains(in, sp.fault) {
			in = append(in, sp.fault)
		}
	}
	if len(in) == 0 {
		return "no fault"
	}
	slices.Sort(in)
	return strings.Join(in, " + ")
}

// failed logs a step of the schedule that did not work.
func (f *injector) failed(step string, err error) {
	if err != nil {
		fmt.Fprintf(f.log, "rywchaos: %s: %v\n", step, err)
	}
}

// pauses pauses a random replica's replay for 0-2 s, again and again.
func (f *injector) pauses(ctx context.Context) {
	for sleep(ctx, time.Duration(rand.Int64N(int64(500*time.Millisecond)))) {
		if len(f.stack.Replicas) == 0 {
			continue // every replica diverged in a failover
		}
		r := f.stack.Replicas[rand.IntN(len(f.stack.Replicas))]
		if !r.Running() {
			continue
		}
		// A replica the cycle kills meanwhile must not hold the pauses up
		// for long.
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := r.PauseReplay(pctx)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				f.failed("pause replay", err)
			}
			continue
		}
		f.count("replica replay paused 0-2 s")
		over := f.during("a replica paused")
		sleep(ctx, time.Duration(rand.Int64N(int64(2*time.Second))))
		if r.Running() {
			_ = r.ResumeReplay(context.WithoutCancel(ctx))
		}
		over()
	}
}

// cycle kills and restarts a replica, restarts Redis empty and cuts the
// last instance off Redis, once per period (o.faultEvery), at random
// offsets: each of them if o injects it; for one it leaves out, it waits
// as long as the fault would have been held, so that a cycle keeps about
// its length. It sets cycled once it has been round n times, and goes on.
func (f *injector) cycle(ctx context.Context, o options, n int) {
	third := o.faultEvery / 3
	for done := 1; ; done++ {
		if !sleep(ctx, third/2+time.Duration(rand.Int64N(int64(third/2)))) {
			return
		}
		down := time.Second + time.Duration(rand.Int64N(int64(time.Second)))
		if o.injects("kill") {
			r := f.stack.Replicas[rand.IntN(len(f.stack.Replicas))]
			if err := r.Kill(ctx); err == nil {
				f.count("replica killed and restarted")
				over := f.during("a replica down")
				sleep(ctx, down)
				f.failed("restart replica", r.Start(context.WithoutCancel(ctx)))
				over()
			} else if ctx.Err() == nil {
				f.failed("kill replica", err)
			}
		} else {
			sleep(ctx, down)
		}

		if !sleep(ctx, third/2) {
			return
		}
		if o.injects("redis") {
			f.redisFault(ctx)
		}

		if !sleep(ctx, third/2) {
			return
		}
		// No partition fault without a proxy (see runMode).
		if f.proxy != nil {
			cut := time.Second + time.Duration(rand.Int64N(int64(2*time.Second)))
			if !o.injects("partition") {
				sleep(ctx, cut)
			} else if err := f.proxy.Blackhole(); err == nil {
				f.count("redis unreachable from the last instance for 1-3 s")
				over := f.during("redis cut off from the last instance")
				sleep(ctx, cut)
				f.failed("heal the partition", f.proxy.Heal())
				over()
			}
		}
		if done >= n {
			f.cycled.Store(true)
		}
	}
}

// faultsText says in words which faults the faults scenario injects.
func faultsText(o options) string {
	var cycle []string
	if o.injects("kill") {
		cycle = append(cycle, "a replica killed and restarted")
	}
	if o.injects("redis") {
		cycle = append(cycle, redisFaultText(o.topology))
	}
	if o.injects("partition") && o.topology.Redis == devstack.RedisSingle {
		cycle = append(cycle, "Redis unreachable from the last instance for 1-3 s")
	}
	var parts []string
	if o.injects("pause") {
		parts = append(parts, "a random replica's replay paused 0-2 s again and again")
	}
	if len(cycle) > 0 {
		parts = append(parts, fmt.Sprintf("every %s, %s", o.faultEvery, strings.Join(cycle, ", ")))
	}
	if left := slices.DeleteFunc(slices.Clone(faultNames), o.injects); len(left) > 0 {
		parts = append(parts, "left out (-faults): "+strings.Join(left, ", "))
	}
	return strings.Join(parts, "; ")
}

// redisFault is the cycle's Redis fault, for the stack's topology: a
// single Redis restarts empty; a Sentinel master is killed, the sentinels
// promote its replica and it comes back as a replica; in a Cluster, one
// shard's master hands over to its replica (CLUSTER FAILOVER), then the
// next shard's master is killed and comes back as its replica's replica
// (a cluster without replicas has a master restart empty instead).
func (f *injector) redisFault(ctx context.Context) {
	back := func(r *devstack.Redis, what string) {
		sleep(ctx, 200*time.Millisecond+time.Duration(rand.Int64N(int64(500*time.Millisecond))))
		ctx := context.WithoutCancel(ctx)
		if err := r.Start(ctx); err != nil {
			f.failed(what, err)
			return
		}
		f.failed(what, f.stack.WaitRedis(ctx))
	}
	switch f.stack.RedisTopology() {
	case devstack.RedisSentinel:
		killed, err := f.stack.KillRedisMaster(ctx)
		if err != nil && ctx.Err() == nil {
			f.failed("kill the redis master", err)
		}
		if killed == nil {
			return
		}
		if err == nil {
			f.count("redis master killed, the sentinels promoted its replica, back as a replica")
		}
		back(killed, "restart the old redis master as a replica")
	case devstack.RedisCluster:
		f.mu.Lock()
		f.redisFaults++
		n := f.redisFaults
		f.mu.Unlock()
		shard := n % 3
		if len(f.stack.RedisNodes) == 3 {
			m := f.stack.RedisNodes[shard]
			if err := m.Stop(ctx); err != nil {
				f.failed("stop a redis cluster master", err)
				return
			}
			f.count("redis cluster master restarted empty (no replica)")
			back(m, "restart the redis cluster master")
			return
		}
		// A handover of one shard, then a crash of the next one's master.
		if _, err := f.stack.ClusterFailover(ctx, devstack.ClusterFailoverOptions{Shard: shard}); err == nil {
			f.count("redis cluster master handed over to its replica (CLUSTER FAILOVER)")
		} else if ctx.Err() == nil {
			f.failed("redis cluster failover", err)
		}
		if !sleep(ctx, 200*time.Millisecond) {
			return
		}
		res, err := f.stack.ClusterFailover(ctx, devstack.ClusterFailoverOptions{Shard: (shard + 1) % 3, Kill: true})
		if err != nil && ctx.Err() == nil {
			f.failed("redis cluster master kill", err)
		}
		if res.Old == nil || res.Old.Running() {
			return
		}
		if err == nil {
			f.count("redis cluster master killed, its replica elected, back as a replica")
		}
		back(res.Old, "restart the killed redis cluster master")
	default:
		if err := f.stack.Redis.Stop(ctx); err != nil {
			if ctx.Err() == nil {
				f.failed("stop redis", err)
			}
			return
		}
		f.count("redis killed and restarted empty")
		over := f.during("redis down")
		sleep(ctx, 200*time.Millisecond+time.Duration(rand.Int64N(int64(500*time.Millisecond))))
		f.failed("restart redis", f.stack.Redis.Start(context.WithoutCancel(ctx)))
		over()
	}
}

// heal undoes every fault and waits until the replicas have caught up.
func (f *injector) heal(ctx context.Context) error {
	if f.proxy != nil {
		_ = f.proxy.Heal()
	}
	for _, r := range f.stack.RedisNodes {
		if !r.Running() {
			if err := r.Start(ctx); err != nil {
				return err
			}
		}
	}
	if err := f.stack.WaitRedis(ctx); err != nil {
		return err
	}
	for _, r := range f.stack.Replicas {
		if !r.Running() {
			if err := r.Start(ctx); err != nil {
				return err
			}
		}
		if err := r.ResumeReplay(ctx); err != nil {
			return err
		}
	}
	return f.stack.WaitCaughtUp(ctx, f.stack.Replicas...)
}

// sleep waits d or until ctx ends, and reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// failover cuts the replicas off the primary one after the other, the last
// first (so that replica1, cut last, has received the most), kills the
// primary, promotes a replica (o.promote, or the most advanced: replica1)
// after reading what it holds, and re-points the others.
func (f *injector) failover(ctx context.Context, o options) (*failoverInfo, error) {
	if err := f.heal(ctx); err != nil {
		return nil, err
	}
	order := slices.Clone(f.stack.Replicas)
	slices.Reverse(order)
	partitionAt := time.Now()
	for _, r := range order {
		if err := r.Detach(ctx); err != nil {
			return nil, err
		}
		f.count("replica cut off from the primary")
		if !sleep(ctx, o.partition/time.Duration(len(order))) {
			return nil, ctx.Err()
		}
	}
	fo := &failoverInfo{switchData: map[uuid.UUID]int{}, partitionAt: partitionAt}
	start := time.Now()
	res, err := f.stack.FailoverWith(ctx, devstack.FailoverOptions{
		Promote: o.promote,
		// A failure detector takes longer than the API's fence lease (1 s)
		// to decide: Patroni's TTL is 30 s. Until the lease has passed,
		// an instance trusts the old primary's history.
		Detect: 1500 * time.Millisecond,
		BeforePromote: func(ctx context.Context, n *devstack.Node) error {
			conn, err := n.Conn(ctx)
			if err != nil {
				return err
			}
			defer conn.Close(context.Background())
			rows, err := conn.Query(ctx, "SELECT id, name FROM users")
			if err != nil {
				return err
			}
			for rows.Next() {
				var id uuid.UUID
				var name string
				if err := rows.Scan(&id, &name); err != nil {
					return err
				}
				fo.switchData[id] = version(name)
			}
			if err := rows.Err(); err != nil {
				return err
			}
			var desc string
			if err := conn.QueryRow(ctx, "SELECT description FROM products WHERE id = 1").Scan(&desc); err != nil {
				return err
			}
			fo.catalog = version(desc)
			return nil
		},
	})
	if err != nil {
		return nil, err
	}
	fo.took, fo.promoted, fo.timeline, fo.promotedAt = time.Since(start), res.Promoted.Name, res.Timeline, res.PromotedAt
	fo.promotion = res.PromotedAt.Sub(start)
	for _, d := range res.Diverged {
		fo.diverged = append(fo.diverged, d.Name)
	}
	f.count("primary killed, " + res.Promoted.Name + " promoted")
	return fo, nil
}

// render writes the report as Markdown.
func render(results []result, o options) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Topology: a primary and 2 streaming replicas; %s.\n", devstack.DescribeTopology(o.topology))
	fmt.Fprintf(&b, "Workload: %d users over %d API instances, %s per mode. Each user saves its profile, then reads it back 1-3 times, through random instances. Half the users send no token back; the other half are sessions that send back each response's token and also read the catalog, which a writer on the primary changes every 50 ms.\n", o.users, o.instances, o.runLength())
	switch o.scenario {
	case "none":
		fmt.Fprintf(&b, "No faults: every node up, no replay paused; replication lag is what the load makes it.\n\n")
	case "faults":
		fmt.Fprintf(&b, "Faults: %s.\n\n", faultsText(o))
	default:
		promote := o.promote
		if promote == "" {
			promote = "the most advanced replica"
		}
		quorum := "asynchronous replication"
		if o.syncStandbys > 0 {
			quorum = fmt.Sprintf("a synchronous quorum (ANY %d)", o.syncStandbys)
		}
		fmt.Fprintf(&b, "Failover, with %s: a random replica's replay paused 0-2 s again and again; a third of the way through, replica2 and then replica1 are cut off from the primary over %s, the primary is killed, %s is promoted and the others re-pointed. A stack per mode.\n\n", quorum, o.partition, promote)
	}
	fmt.Fprintln(&b, "| mode | requests | acknowledged writes | own-write reads | served by replicas | RYW violations | session reads | monotonic regressions | 5xx | other errors | missing at the end | time | requests/s | p99 |")
	fmt.Fprintln(&b, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range results {
		share := 0.0
		if r.ownReads > 0 {
			share = 100 * float64(r.replicaReads) / float64(r.ownReads)
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %.1f%% | %d | %d | %d | %d | %d | %d | %.0f s | %.0f | %.0f ms |\n", r.mode, r.ops, r.writes, r.ownReads, share,
			r.violations, r.sessionReads, r.regressions, r.status5xx, r.otherErrors, r.lostFinal, r.elapsed.Seconds(), r.rate(), r.p99ms())
	}
	writeMedians(&b, results)
	writeComparison(&b, results)
	if o.scenario == "failover" {
		fmt.Fprintln(&b, "\n| mode | promoted | diverged | promotion (and re-pointing) took | acknowledged writes lost | users who lost one | counted by the instances (for certain) | reads of lost or diverged data after it | 503 during it | writes after it |")
		fmt.Fprintln(&b, "|---|---|---|---|---|---|---|---|---|---|")
		for _, r := range results {
			f := r.failover
			if f == nil {
				fmt.Fprintf(&b, "| %s | (no failover) | | | | | | | | |\n", r.mode)
				continue
			}
			diverged := strings.Join(f.diverged, ", ")
			if diverged == "" {
				diverged = "none"
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %.1f s (%.1f s) | %d | %d | %.0f (%.0f) | %d | %d | %v |\n", r.mode, f.promoted, diverged, f.promotion.Seconds(), f.took.Seconds(),
				f.lostAcked, f.lostUsers, f.counted, f.certain, r.divergent, r.unavailable, f.recovered)
		}
	}
	fmt.Fprintln(&b, "\nFaults injected:")
	fmt.Fprintln(&b)
	for _, r := range results {
		fmt.Fprintf(&b, "- %s: %s\n", r.mode, counts(r.faults))
	}
	fmt.Fprintf(&b, "\nAnswers that took %s or more, by kind, instance and routing reason (the last instance is the one the cycle cuts off Redis):\n\n", slowAnswer)
	for _, r := range results {
		fmt.Fprintf(&b, "- %s: %s\n", r.mode, counts(r.slow))
	}
	writeSpent(&b, results)
	writeCPU(&b, results)
	fmt.Fprintln(&b, "\nRouting reasons of the own-write reads:")
	fmt.Fprintln(&b)
	for _, r := range results {
		fmt.Fprintf(&b, "- %s: %s\n", r.mode, counts(r.reasons))
	}
	fmt.Fprintln(&b, "\nReads on the primary that settled first, after a session's reads on a replica (ryw_primary_settles_total, by outcome; docs/SESSIONS.md):")
	fmt.Fprintln(&b)
	for _, r := range results {
		fmt.Fprintf(&b, "- %s: %s\n", r.mode, counts(r.settles))
	}
	for _, r := range results {
		if len(r.problems) > 0 {
			fmt.Fprintf(&b, "\nFirst problems seen in %s mode:\n\n", r.mode)
			for _, p := range r.problems {
				fmt.Fprintf(&b, "- %s\n", p)
			}
		}
	}
	if v := verdict(results, o); v != "" {
		fmt.Fprintf(&b, "\nVerdict: FAIL: %s\n", v)
	} else {
		fmt.Fprintln(&b, "\nVerdict: pass (with read-your-writes on: no violation, no regression, no 5xx, no write missing, every lost write counted; "+controlText(results, o)+")")
	}
	return b.String()
}

// controlText says what the verdict learned from the control: off mode's
// violations and regressions show that the checker can fail, but only
// when off mode ran under faults (see verdict).
func controlText(results []result, o options) string {
	switch {
	case !slices.ContainsFunc(results, func(r result) bool { return r.mode == "off" }):
		return "no control ran (add off to -modes to show that the checker can fail)"
	case o.scenario == "none":
		return "the control is not judged without faults"
	case !o.injects("pause"):
		return "the control is not judged without replay paused"
	}
	return "the control saw violations and regressions"
}

// rate is the run's requests per second (0 if it took no time).
func (r result) rate() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.ops) / r.elapsed.Seconds()
}

// p99ms is the run's p99 in milliseconds.
func (r result) p99ms() float64 { return float64(r.p99.Microseconds()) / 1000 }

// writeMedians adds, when a mode ran more than once (-modes time,lsn,lsn,time),
// each mode's median rate and p99 over its runs: one run sees about one
// fault cycle, so a single pair of runs says little about which mode is
// faster under the faults.
func writeMedians(b *strings.Builder, results []result) {
	modes, runs := byMode(results)
	rates, p99s := map[string][]float64{}, map[string][]float64{}
	for _, m := range modes {
		for _, r := range runs[m] {
			rates[m] = append(rates[m], r.rate())
			p99s[m] = append(p99s[m], r.p99ms())
		}
	}
	if !slices.ContainsFunc(modes, func(m string) bool { return len(rates[m]) > 1 }) {
		return
	}
	fmt.Fprintln(b, "\nEach mode over its runs (medians, and the range):")
	fmt.Fprintln(b)
	fmt.Fprintln(b, "| mode | runs | requests/s | range | p99 | range |")
	fmt.Fprintln(b, "|---|---|---|---|---|---|")
	for _, m := range modes {
		r, p := rates[m], p99s[m]
		fmt.Fprintf(b, "| %s | %d | %.0f | %.0f-%.0f | %.0f ms | %.0f-%.0f ms |\n", m, len(r), loadgen.Median(r), slices.Min(r), slices.Max(r), loadgen.Median(p), slices.Min(p), slices.Max(p))
	}
}

// redisFaultText says what the cycle does to Redis with the topology.
func redisFaultText(t devstack.Options) string {
	switch {
	case t.Redis == devstack.RedisSentinel:
		return "the Redis master killed (SIGKILL), the sentinels promoting its replica and the old master back as a replica (no partition fault: the clients reach the nodes at the addresses the sentinels give)"
	case t.Redis == devstack.RedisCluster && t.RedisReplicas == 0:
		return "a Redis Cluster master restarted empty, a shard at a time (no partition fault: the clients reach the nodes at the addresses the cluster gives)"
	case t.Redis == devstack.RedisCluster:
		return "a Redis Cluster master handing over to its replica (CLUSTER FAILOVER), then the next shard's master killed (SIGKILL), its replica elected and the old master back as a replica (no partition fault: the clients reach the nodes at the addresses the cluster gives)"
	}
	return "Redis killed and restarted empty"
}

// cpuGroups are the process groups whose CPU the report shows, in its
// order. The generator is this process: the users, the checks, the fault
// injector and the proxy to Redis.
var cpuGroups = []string{"API", "primary", "replicas", "Redis", "generator"}

// cpuSample is how often the CPU meter reads the processes: what a killed
// node used since its last sample goes uncounted.
const cpuSample = 200 * time.Millisecond

// cpuMeter watches every process of the run, by group. The nodes are
// taken as the run starts: a failover reassigns the stack's fields while
// the meter samples, and the primary's group stays the node that was the
// primary.
func cpuMeter(stack *devstack.Stack, apis []*devstack.API) *proccpu.Meter {
	primary, replicas := stack.Primary, slices.Clone(stack.Replicas)
	redis := append(slices.Clone(stack.RedisNodes), stack.Sentinels...)
	m := proccpu.NewMeter()
	m.Watch("API", pidsOf(apis), false)
	m.Watch("primary", pidsOf([]*devstack.Node{primary}), true)
	m.Watch("replicas", pidsOf(replicas), true)
	m.Watch("Redis", pidsOf(redis), false)
	m.Watch("generator", func() []int { return []int{os.Getpid()} }, false)
	return m
}

// pidsOf returns a function that lists the processes' current pids (0
// for one not running), for proccpu.Meter.Watch.
func pidsOf[P interface{ Pid() int }](procs []P) func() []int {
	return func() []int {
		pids := make([]int, len(procs))
		for i, p := range procs {
			pids[i] = p.Pid()
		}
		return pids
	}
}

// writeCPU writes each mode's CPU time per request by process group, and
// how many cores the run kept busy: in a closed loop on a saturated
// machine, the rate is the cores over the CPU per request, so a mode that
// loses requests without using more CPU per request is waiting, not
// working.
func writeCPU(w io.Writer, results []result) {
	if !slices.ContainsFunc(results, func(r result) bool { return len(r.cpu) > 0 }) {
		return
	}
	fmt.Fprintln(w, "\nCPU per request by process (µs; sampled every "+cpuSample.String()+", so a killed node's last moments go uncounted), and the cores the run kept busy:")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| mode | "+strings.Join(cpuGroups, " | ")+" | all | cores busy |")
	fmt.Fprintln(w, "|---|"+strings.Repeat("---|", len(cpuGroups)+2))
	for _, r := range results {
		if len(r.cpu) == 0 || r.ops == 0 || r.elapsed <= 0 {
			continue
		}
		var all time.Duration
		fmt.Fprintf(w, "| %s |", r.mode)
		for _, g := range cpuGroups {
			all += r.cpu[g]
			fmt.Fprintf(w, " %.0f |", float64(r.cpu[g].Microseconds())/float64(r.ops))
		}
		fmt.Fprintf(w, " %.0f | %.2f |\n", float64(all.Microseconds())/float64(r.ops), all.Seconds()/r.elapsed.Seconds())
	}
}

// spent is a set of answers (of one kind and routing reason, or under one
// set of faults): how many, and the time they took in all.
type spent struct {
	n     int
	total time.Duration
}

func (s spent) add(d time.Duration) spent { return spent{s.n + 1, s.total + d} }

// writeSpent writes, per mode, where the users' time went: the answer time
// by kind and routing reason, then by the faults in place when each request
// started, largest first, with its share of the mode's total and its mean.
// In a closed loop the rate is the users over the mean answer time, so a
// category that one mode spends more on is where it loses requests.
func writeSpent(w io.Writer, results []result) {
	fmt.Fprintln(w, "\nWhere the users' time went: answer time by kind and routing reason, summed over the run (largest first; a category under 1% of the mode's total is left out):")
	spentTable(w, "kind (reason)", results, func(r result) map[string]spent { return r.spent })
	if slices.ContainsFunc(results, func(r result) bool { return len(r.byFault) > 1 }) {
		fmt.Fprintln(w, "\nThe same time by the faults in place when each request started:")
		spentTable(w, "faults in place", results, func(r result) map[string]spent { return r.byFault })
	}
}

func spentTable(w io.Writer, what string, results []result, of func(result) map[string]spent) {
	fmt.Fprintln(w)
	fmt.Fprintf(w, "| mode | %s | answers | time | share | mean |\n", what)
	fmt.Fprintln(w, "|---|---|---|---|---|---|")
	for _, r := range results {
		m := of(r)
		var all time.Duration
		keys := make([]string, 0, len(m))
		for k, s := range m {
			all += s.total
			keys = append(keys, k)
		}
		slices.SortFunc(keys, func(a, b string) int { return cmp.Or(cmp.Compare(m[b].total, m[a].total), strings.Compare(a, b)) })
		for _, k := range keys {
			s := m[k]
			if all == 0 || s.total*100 < all {
				continue
			}
			fmt.Fprintf(w, "| %s | %s | %d | %.1f s | %.0f%% | %.1f ms |\n", r.mode, k, s.n, s.total.Seconds(), 100*s.total.Seconds()/all.Seconds(), float64(s.total.Microseconds())/1000/float64(s.n))
		}
	}
}

func counts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

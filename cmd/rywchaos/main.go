// Command rywchaos is the project's history checker: it runs many users over
// two or more API instances on a real cluster (devstack) while it injects
// faults, checks every read of a user's own profile against that user's last
// acknowledged write, and reports, per mode, the read-your-writes
// violations, the 5xx answers, the lost writes and the share of own-write
// reads that replicas served.
//
// Each user loops: save the profile with the next version ("v<n>") through
// a random instance, then read it back 1-3 times through random instances,
// sending no token back (like a client without cookies). A read that shows
// a version below the last one a write acknowledged is a violation. At the
// end each user's row on the primary must hold at least that version, or a
// write was lost.
//
// The faults, on a schedule that repeats through the run:
//
//   - a random replica's replay paused for 0-2 s, again and again;
//   - a replica killed (immediate shutdown) and restarted;
//   - Redis killed and restarted empty;
//   - Redis unreachable from the last instance only (a blackholing proxy).
//
// RYW_MODE=off is the control: the same run must report violations. Traffic
// stays on loopback; the run ends by itself.
//
// Usage:
//
//	rywchaos [-modes time,lsn,off] [-ops 100000] [-users 60] [-instances 2]
//	         [-max-duration 10m] [-api-bin PATH] [-out FILE]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/ryw-go/ryw/internal/devstack"
	"github.com/ryw-go/ryw/internal/loadgen"
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
	modes       []string
	ops         int
	users       int
	instances   int
	maxDuration time.Duration
	faultEvery  time.Duration
	apiBin      string
	out         string
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	var modes string
	fs := flag.NewFlagSet("rywchaos", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&modes, "modes", "time,lsn,off", "RYW_MODEs to run, in order; off is the control and must see violations")
	fs.IntVar(&o.ops, "ops", 100_000, "HTTP requests per mode")
	fs.IntVar(&o.users, "users", 60, "concurrent users")
	fs.IntVar(&o.instances, "instances", 2, "API instances; the last one loses Redis during the partition fault")
	fs.DurationVar(&o.maxDuration, "max-duration", 10*time.Minute, "stop a mode after this long even if -ops is not reached")
	fs.DurationVar(&o.faultEvery, "fault-every", 8*time.Second, "length of one cycle of the kill, Redis restart and partition faults")
	fs.StringVar(&o.apiBin, "api-bin", "", "API executable (default: go build ./cmd/api)")
	fs.StringVar(&o.out, "out", "", "also write the Markdown report to this file")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	var err error
	if o.modes, err = loadgen.ParseModes(modes); err != nil {
		return o, err
	}
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	case o.ops < 100:
		return o, fmt.Errorf("-ops must be at least 100, got %d", o.ops)
	case o.users < 1 || o.users > 1000:
		return o, fmt.Errorf("-users must be 1..1000, got %d", o.users)
	case o.instances < 2 || o.instances > 8:
		return o, fmt.Errorf("-instances must be 2..8, got %d", o.instances)
	case o.maxDuration <= 0 || o.maxDuration > time.Hour:
		return o, fmt.Errorf("-max-duration must be positive and at most 1h, got %s", o.maxDuration)
	case o.faultEvery < 2*time.Second:
		return o, fmt.Errorf("-fault-every must be at least 2s, got %s", o.faultEvery)
	}
	return o, nil
}

// run runs every mode and prints the report; ok is false when a
// read-your-writes mode saw a violation, a 5xx or a lost write, or when
// the control saw no violation.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) (ok bool, err error) {
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
	fmt.Fprintln(stderr, "rywchaos: starting a primary, 2 replicas and Redis")
	stack, err := devstack.Start(ctx, devstack.Options{Replicas: 2, Migrate: true})
	if err != nil {
		return false, err
	}
	defer stack.Close()

	var results []result
	for _, mode := range o.modes {
		fmt.Fprintf(stderr, "rywchaos: %s mode, %d users over %d instances, %d requests, faults every %s\n", mode, o.users, o.instances, o.ops, o.faultEvery)
		res, err := runMode(ctx, stack, mode, o, stderr)
		if err != nil {
			return false, err
		}
		results = append(results, res)
	}
	report := render(results, o)
	fmt.Fprint(stdout, report)
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(report), 0o644); err != nil {
			return false, err
		}
	}
	return verdict(results) == "", nil
}

// verdict says what is wrong with the results, or "" if nothing is.
func verdict(results []result) string {
	var problems []string
	for _, r := range results {
		switch {
		case r.mode == "off" && r.violations == 0:
			problems = append(problems, "the control (off) saw no violation")
		case r.mode != "off" && (r.violations > 0 || r.status5xx > 0 || r.lost > 0):
			problems = append(problems, fmt.Sprintf("%s mode: %d violations, %d 5xx, %d lost writes", r.mode, r.violations, r.status5xx, r.lost))
		}
		if r.ops == 0 {
			problems = append(problems, r.mode+" mode ran nothing")
		}
	}
	return strings.Join(problems, "; ")
}

// result is one mode's history, checked.
type result struct {
	mode         string
	ops          int
	writes       int // acknowledged
	ownReads     int
	replicaReads int
	violations   int
	status5xx    int
	otherErrors  int // transport errors and 4xx, which a correct client never causes
	lost         int
	elapsed      time.Duration
	faults       map[string]int
	reasons      map[string]int
	problems     []string
}

func runMode(ctx context.Context, stack *devstack.Stack, mode string, o options, log io.Writer) (result, error) {
	proxy, redisURL, err := devstack.StartProxyForURL(stack.Redis.URL)
	if err != nil {
		return result{}, err
	}
	defer proxy.Close()
	apis, err := stack.StartAPI(ctx, devstack.APIOptions{
		Binary: o.apiBin, Instances: o.instances, Output: log,
		Env: []string{"RYW_MODE=" + mode, "LOG_LEVEL=error"},
		InstanceEnv: func(i int) []string {
			if i == o.instances-1 {
				return []string{"REDIS_URL=" + redisURL}
			}
			return nil
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
	h := &history{res: &res, budget: int64(o.ops), cycled: &cycled}
	runCtx, stop := context.WithTimeout(ctx, o.maxDuration)
	defer stop()
	var faults sync.WaitGroup
	faultCtx, stopFaults := context.WithCancel(runCtx)
	inj := &injector{stack: stack, proxy: proxy, log: log, counts: map[string]int{}, cycled: &cycled}
	faults.Go(func() { inj.pauses(faultCtx) })
	faults.Go(func() { inj.cycle(faultCtx, o.faultEvery) })

	client := &http.Client{
		Timeout:   15 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: o.users, MaxConnsPerHost: 2 * o.users},
	}
	start := time.Now()
	users := make([]*userState, o.users)
	var wg sync.WaitGroup
	for i := range users {
		users[i] = &userState{id: uuid.New()}
		wg.Go(func() { h.user(runCtx, client, urls, users[i]) })
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	stopFaults()
	faults.Wait()
	if err := inj.heal(context.WithoutCancel(ctx)); err != nil {
		return res, err
	}
	res.faults = inj.counts
	// Lost writes: the primary must hold at least each user's last
	// acknowledged version.
	for _, u := range users {
		if u.acked == 0 {
			continue
		}
		var name string
		if err := stack.Primary.QueryRow(context.WithoutCancel(ctx), []any{&name}, "SELECT name FROM users WHERE id = $1", u.id); err != nil {
			return res, fmt.Errorf("read back user %s: %w", u.id, err)
		}
		if v := version(name); v < u.acked {
			res.lost++
			h.problem("lost write: user %s acknowledged v%d, the primary holds %q", u.id, u.acked, name)
		}
	}
	return res, ctx.Err()
}

// history collects what the users saw, and stops them when the budget of
// requests is spent.
type history struct {
	mu     sync.Mutex
	res    *result
	budget int64
	spent  atomic.Int64
	// cycled is set once every fault of the cycle has been injected: the
	// run goes on until then, however small the budget.
	cycled *atomic.Bool
}

// more reports whether the user should send another request.
func (h *history) more() bool {
	return h.spent.Add(1) <= h.budget || !h.cycled.Load()
}

func (h *history) problem(format string, args ...any) {
	if len(h.res.problems) < 10 {
		h.res.problems = append(h.res.problems, fmt.Sprintf(format, args...))
	}
}

type userState struct {
	id    uuid.UUID
	acked int // the last version a write acknowledged
}

// user runs one user's loop until the budget is spent or ctx ends.
func (h *history) user(ctx context.Context, client *http.Client, apis []string, u *userState) {
	for next := 1; ctx.Err() == nil; next++ {
		if !h.more() {
			return
		}
		api := apis[rand.IntN(len(apis))]
		body := fmt.Sprintf(`{"email":"chaos@example.com","name":"v%d"}`, next)
		status, hdr, _, err := loadgen.Call(ctx, client, http.MethodPost, api+"/api/me/profile", u.id, body)
		if ctx.Err() != nil {
			return
		}
		h.mu.Lock()
		h.res.ops++
		switch {
		case err == nil && status == http.StatusOK:
			u.acked = next
			h.res.writes++
		default:
			h.failed("write", api, status, hdr, err)
		}
		h.mu.Unlock()
		for range 1 + rand.IntN(3) {
			if !h.more() {
				return
			}
			api := apis[rand.IntN(len(apis))]
			status, hdr, name, err := loadgen.Call(ctx, client, http.MethodGet, api+"/api/me", u.id, "")
			if ctx.Err() != nil {
				return
			}
			h.mu.Lock()
			h.res.ops++
			if err != nil || (status != http.StatusOK && status != http.StatusNotFound) {
				h.failed("read", api, status, hdr, err)
				h.mu.Unlock()
				continue
			}
			h.res.ownReads++
			servedBy := hdr.Get("X-Served-By")
			if strings.HasPrefix(servedBy, "replica") {
				h.res.replicaReads++
			}
			h.res.reasons[hdr.Get("X-Routing-Reason")]++
			if seen := version(name); seen < u.acked {
				h.res.violations++
				h.problem("user %s acknowledged v%d, read %q from %s (%s) via %s", u.id, u.acked, name, servedBy, hdr.Get("X-Routing-Reason"), api)
			}
			h.mu.Unlock()
		}
	}
}

// failed counts a failed request. The caller holds h.mu.
func (h *history) failed(what, api string, status int, hdr http.Header, err error) {
	if status >= 500 {
		h.res.status5xx++
	} else {
		h.res.otherErrors++
	}
	h.problem("%s via %s: %d %v (served by %s, %s)", what, api, status, err, hdr.Get("X-Served-By"), hdr.Get("X-Routing-Reason"))
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

	mu     sync.Mutex
	counts map[string]int
	cycled *atomic.Bool // set after the first full cycle
}

// count notes a fault injected.
func (f *injector) count(fault string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.counts[fault]++
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
		sleep(ctx, time.Duration(rand.Int64N(int64(2*time.Second))))
		if r.Running() {
			_ = r.ResumeReplay(context.WithoutCancel(ctx))
		}
	}
}

// cycle kills and restarts a replica, restarts Redis empty and cuts the
// last instance off Redis, once per period, at random offsets.
func (f *injector) cycle(ctx context.Context, period time.Duration) {
	third := period / 3
	for {
		if !sleep(ctx, third/2+time.Duration(rand.Int64N(int64(third/2)))) {
			return
		}
		r := f.stack.Replicas[rand.IntN(len(f.stack.Replicas))]
		if err := r.Kill(ctx); err == nil {
			f.count("replica killed and restarted")
			sleep(ctx, time.Second+time.Duration(rand.Int64N(int64(time.Second))))
			f.failed("restart replica", r.Start(context.WithoutCancel(ctx)))
		} else if ctx.Err() == nil {
			f.failed("kill replica", err)
		}

		if !sleep(ctx, third/2) {
			return
		}
		if err := f.stack.Redis.Stop(ctx); err == nil {
			f.count("redis killed and restarted empty")
			sleep(ctx, 200*time.Millisecond+time.Duration(rand.Int64N(int64(500*time.Millisecond))))
			f.failed("restart redis", f.stack.Redis.Start(context.WithoutCancel(ctx)))
		} else if ctx.Err() == nil {
			f.failed("stop redis", err)
		}

		if !sleep(ctx, third/2) {
			return
		}
		if err := f.proxy.Blackhole(); err == nil {
			f.count("redis unreachable from the last instance for 1-3 s")
			sleep(ctx, time.Second+time.Duration(rand.Int64N(int64(2*time.Second))))
			f.failed("heal the partition", f.proxy.Heal())
		}
		f.cycled.Store(true)
	}
}

// heal undoes every fault and waits until the replicas have caught up.
func (f *injector) heal(ctx context.Context) error {
	_ = f.proxy.Heal()
	if !f.stack.Redis.Running() {
		if err := f.stack.Redis.Start(ctx); err != nil {
			return err
		}
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

// render writes the report as Markdown.
func render(results []result, o options) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Workload: %d users over %d API instances, %d requests per mode; each user saves its profile, then reads it back 1-3 times, through random instances, without sending its token.\n", o.users, o.instances, o.ops)
	fmt.Fprintf(&b, "Faults: a random replica's replay paused 0-2 s again and again; every %s, a replica killed and restarted, Redis killed and restarted empty, Redis unreachable from the last instance for 1-3 s.\n\n", o.faultEvery)
	fmt.Fprintln(&b, "| mode | requests | acknowledged writes | own-write reads | served by replicas | violations | 5xx | other errors | lost writes | time |")
	fmt.Fprintln(&b, "|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range results {
		share := 0.0
		if r.ownReads > 0 {
			share = 100 * float64(r.replicaReads) / float64(r.ownReads)
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %.1f%% | %d | %d | %d | %d | %.0f s |\n", r.mode, r.ops, r.writes, r.ownReads, share,
			r.violations, r.status5xx, r.otherErrors, r.lost, r.elapsed.Seconds())
	}
	fmt.Fprintln(&b, "\nFaults injected:")
	fmt.Fprintln(&b)
	for _, r := range results {
		fmt.Fprintf(&b, "- %s: %s\n", r.mode, counts(r.faults))
	}
	fmt.Fprintln(&b, "\nRouting reasons of the own-write reads:")
	fmt.Fprintln(&b)
	for _, r := range results {
		fmt.Fprintf(&b, "- %s: %s\n", r.mode, counts(r.reasons))
	}
	for _, r := range results {
		if len(r.problems) > 0 {
			fmt.Fprintf(&b, "\nFirst problems seen in %s mode:\n\n", r.mode)
			for _, p := range r.problems {
				fmt.Fprintf(&b, "- %s\n", p)
			}
		}
	}
	if v := verdict(results); v != "" {
		fmt.Fprintf(&b, "\nVerdict: FAIL: %s\n", v)
	} else {
		fmt.Fprintln(&b, "\nVerdict: pass (no violation, 5xx or lost write with read-your-writes on; the control saw violations)")
	}
	return b.String()
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

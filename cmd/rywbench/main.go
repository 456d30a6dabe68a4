// Command rywbench measures read-your-writes routing on a real cluster: a
// primary, streaming replicas and Redis, started by devstack. It has five
// suites.
//
// throughput (the default, what make bench runs): what read-your-writes
// costs per request against off mode and against what the nodes can do:
// closed-loop peak and latency at a constant rate for GET /api/me, pgbench
// and redis-benchmark on the same nodes, CPU per request by process, and
// how it all grows with replicas and users. See throughput.go. With
// -pooler, a PgBouncer sits in front of every node and each mode runs
// twice, direct and through it (pooler.go).
//
// own-write: many users who each save their profile, wait 0-100 ms, and
// read it back; it reports the share of those own-write reads that replicas
// served, read and write latency, and violations: reads that did not show
// the user's last acknowledged write, checked on every read. The first mode
// is the baseline; -baseline-bin sets another build beside this one.
//
// -scenarios: lsn mode under faults between the API and a replica.
//
// peers: ryw (lsn, time, off) beside the API with every read on the
// primary and beside pgpool-II's load balancing in front of the same nodes,
// in each disable_load_balance_on_write setting, with named and unnamed
// statements: peak, violations, monotonic regressions and replica share
// (peers.go). It needs Debian's pgpool2.
//
// overload: GET /api/me at 1x, 4x and 16x -conns connections and a cold
// start under load: goodput, p99, replicas taken out of rotation, reads
// retried on the primary (overload.go).
//
// Every figure is compared with a baseline measured in the same run.
// Traffic stays on loopback and the run ends by itself.
//
// Usage:
//
//	rywbench [-suite throughput|own-write|peers|overload] [-modes off,time,lsn] [-rounds 3] [-phase 5s]
//	         [-conns 32] [-population 1000] [-scale=true] [-users 32] [-duration 15s]
//	         [-read-after 100ms] [-replicas 2] [-replica-delay 20ms] [-pooler transaction|session]
//	         [-api-bin PATH] [-out FILE]
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"

	"github.com/ryw-go/ryw/config"
	"github.com/ryw-go/ryw/internal/devstack"
	"github.com/ryw-go/ryw/internal/loadgen"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "rywbench:", err)
		os.Exit(1)
	}
}

type options struct {
	modes        []string
	users        int
	duration     time.Duration
	readAfter    time.Duration
	replicas     int
	replicaDelay time.Duration
	apiBin       string
	baselineBin  string
	scenarios    []string
	out          string
	pictures     string

	// The throughput suite.
	suite        string
	rounds       int
	phase        time.Duration
	conns        int
	population   int
	scale        bool
	window       time.Duration // the API's read-your-writes window (its default)
	markerTTL    time.Duration // the API's marker TTL (its default)
	pollInterval time.Duration // the API's monitor interval (its default)
	args         string        // the command line, for the report
	pprofMode    string        // the API (a label of apiLabels) that keeps PPROF_ADDR
	// pooler is the PgBouncer pool mode (devstack.PoolTransaction or
	// PoolSession) of the throughput suite's stack, or "": none.
	pooler string
	// proxy is, for the overload suite, "haproxy": each API process is
	// also measured behind an HAProxy that sends it at most -conns requests
	// at once over connections it reuses; or "": none.
	proxy string
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	var modes string
	fs := flag.NewFlagSet("rywbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.suite, "suite", "throughput", "throughput (GET /api/me peak and latency, CPU per request, ratios to off mode and to pgbench; the make bench default), own-write (users write then read back; violations and offload), peers (ryw beside every read on the primary and pgpool-II: peak, violations, monotonic regressions, offload; needs pgpool2) or overload (goodput, p99, replicas out of rotation and retries at 1x, 4x and 16x -conns, and a cold start under load; needs wrk)")
	fs.StringVar(&modes, "modes", "", "RYW_MODEs to measure, in order (default off,time,lsn for throughput, which needs off; time,lsn,off for own-write, whose first is the baseline)")
	fs.IntVar(&o.rounds, "rounds", 5, "throughput: rounds in which the modes take turns; overload: rounds of every level (default 3 there), the report giving medians")
	fs.DurationVar(&o.phase, "phase", 5*time.Second, "throughput: how long each measurement runs")
	fs.IntVar(&o.conns, "conns", 32, "throughput: closed-loop connections; overload: the 1x concurrency (default 64 there)")
	fs.IntVar(&o.population, "population", 1000, "throughput: users with a profile whom the reads are for")
	fs.StringVar(&o.pprofMode, "pprof", "", "throughput: the mode whose API process gets PPROF_ADDR from the environment (the others get none), for docs/PROFILING.md; with -pooler, lsn"+pooledSuffix+" names the pooled one")
	fs.StringVar(&o.proxy, "proxy", "", "overload: also measure each API process behind this proxy, which holds the clients' connections and sends the process at most -conns requests at once (haproxy, or none: the default), labelled <mode>"+proxiedSuffix+"; needs haproxy")
	fs.StringVar(&o.pooler, "pooler", "", "throughput: put a PgBouncer in this pool mode (transaction, session, or none: the default) in front of every node, and run each mode twice, direct and through it (labelled <mode>"+pooledSuffix+")")
	fs.BoolVar(&o.scale, "scale", true, "throughput: also measure 1, 2 and 4 replicas and 100x the population, one round each")
	fs.IntVar(&o.users, "users", 32, "concurrent users, each writing then reading its own profile")
	fs.DurationVar(&o.duration, "duration", 15*time.Second, "how long each mode runs")
	fs.DurationVar(&o.readAfter, "read-after", 100*time.Millisecond, "each read comes a uniformly random 0..read-after after its write")
	fs.IntVar(&o.replicas, "replicas", 2, "streaming replicas")
	fs.DurationVar(&o.replicaDelay, "replica-delay", 20*time.Millisecond, "recovery_min_apply_delay of the last replica (its lag)")
	fs.StringVar(&o.apiBin, "api-bin", "", "API executable (default: go build ./cmd/api)")
	fs.StringVar(&o.baselineBin, "baseline-bin", "", "another API executable (an older commit, say) to measure in the same run, mode by mode, labelled \"<mode> (baseline)\" (own-write) or <mode>+baseline (throughput)")
	var scenarios string
	fs.StringVar(&scenarios, "scenarios", "", "instead of the modes, measure lsn mode under faults between the API and replica1: a comma-separated list of none,blackhole,slow,flood (none first: the baseline)")
	fs.StringVar(&o.out, "out", "", "also write the Markdown report to this file")
	fs.StringVar(&o.pictures, "pictures", "", "throughput suite: draw the pictures (bench-*.png) into this directory (default: the -out file's, none without -out)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.suite == "overload" {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["conns"] {
			o.conns = 64
		}
		if !set["rounds"] {
			o.rounds = 3
		}
	}
	var err error
	o.args = userArgs(args)
	if o.pooler == "none" {
		o.pooler = "" // as devstack -pooler and DATABASE_POOLER spell it
	}
	o.window, o.markerTTL, o.pollInterval = config.DefaultWindow, config.DefaultMarkerTTL, config.DefaultPollInterval
	userModes := modes
	if modes == "" {
		modes = "time,lsn,off"
		if o.suite == "throughput" || o.suite == "overload" {
			modes = "off,time,lsn"
		}
	}
	if o.modes, err = loadgen.ParseModes(modes); err != nil {
		return o, err
	}
	if scenarios != "" {
		for _, s := range strings.Split(scenarios, ",") {
			if !slices.Contains(scenarioNames, s) {
				return o, fmt.Errorf("-scenarios: %q is not one of %s", s, strings.Join(scenarioNames, ","))
			}
			o.scenarios = append(o.scenarios, s)
		}
	}
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	case o.users < 1 || o.users > 1000:
		return o, fmt.Errorf("-users must be 1..1000, got %d", o.users)
	case o.duration <= 0 || o.duration > 10*time.Minute:
		return o, fmt.Errorf("-duration must be positive and at most 10m, got %s", o.duration)
	case o.readAfter < 0:
		return o, fmt.Errorf("-read-after must be >= 0, got %s", o.readAfter)
	case o.replicas < 1:
		return o, fmt.Errorf("-replicas must be >= 1, got %d", o.replicas)
	case o.suite != "throughput" && o.suite != "own-write" && o.suite != "peers" && o.suite != "overload":
		return o, fmt.Errorf("-suite must be throughput, own-write, peers or overload, got %q", o.suite)
	case o.suite == "overload" && (len(o.scenarios) > 0 || o.pooler != ""):
		return o, errors.New("-suite overload: -scenarios and -pooler do not apply")
	case o.suite == "peers" && (userModes != "" || len(o.scenarios) > 0 || o.baselineBin != ""):
		return o, errors.New("-suite peers measures its own fixed list of configurations: -modes, -scenarios and -baseline-bin do not apply")
	case o.suite == "throughput" && !slices.Contains(o.modes, "off"):
		return o, errors.New("-modes: the throughput suite compares with off mode, so it needs off")
	case o.rounds < 1 || o.rounds > 20:
		return o, fmt.Errorf("-rounds must be 1..20, got %d", o.rounds)
	case o.phase < time.Second || o.phase > 10*time.Minute:
		return o, fmt.Errorf("-phase must be 1s..10m, got %s", o.phase)
	case o.conns < 1 || o.conns > 1000:
		return o, fmt.Errorf("-conns must be 1..1000, got %d", o.conns)
	case o.population < 1 || o.population > 1_000_000:
		return o, fmt.Errorf("-population must be 1..1000000, got %d", o.population)
	case o.pooler != "" && o.pooler != devstack.PoolTransaction && o.pooler != devstack.PoolSession:
		return o, fmt.Errorf("-pooler must be %s or %s, got %q", devstack.PoolTransaction, devstack.PoolSession, o.pooler)
	case o.pooler != "" && (o.suite != "throughput" || len(o.scenarios) > 0):
		return o, errors.New("-pooler: only the throughput suite (without -scenarios) runs behind PgBouncer")
	case o.proxy != "" && o.proxy != "none" && o.proxy != "haproxy":
		return o, fmt.Errorf("-proxy must be haproxy or none, got %q", o.proxy)
	case o.proxy == "haproxy" && o.suite != "overload":
		return o, errors.New("-proxy: only the overload suite runs behind a proxy")
	}
	if o.proxy == "none" {
		o.proxy = ""
	}
	return o, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	bin, cleanup, err := loadgen.APIBinary(ctx, o.apiBin, "rywbench", stderr)
	if err != nil {
		return err
	}
	defer cleanup()
	o.apiBin = bin
	if o.suite == "peers" {
		commit := commitOf(ctx, o.apiBin)
		rep, err := runPeers(ctx, o, stderr)
		if err != nil {
			return err
		}
		return emit(renderPeers(rep, o, commit), o, stdout)
	}
	if o.suite == "overload" {
		commit := commitOf(ctx, o.apiBin)
		rep, err := runOverload(ctx, o, stderr)
		if err != nil {
			return err
		}
		return emit(renderOverload(rep, o, commit), o, stdout)
	}
	if o.suite == "throughput" && len(o.scenarios) == 0 {
		commit := commitOf(ctx, o.apiBin) // before the report changes the checkout
		results, err := runThroughput(ctx, o, stderr)
		if err != nil {
			return err
		}
		if dir := o.pictures; dir != "" || o.out != "" {
			if dir == "" {
				dir = filepath.Dir(o.out)
			}
			written, err := writePictures(dir, results[0])
			if err != nil {
				return fmt.Errorf("pictures: %w", err)
			}
			fmt.Fprintf(stderr, "rywbench: wrote %s\n", strings.Join(written, ", "))
		}
		return emit(renderThroughput(results, o, commit), o, stdout)
	}
	fmt.Fprintf(stderr, "rywbench: starting a primary, %d replicas (the last %s behind) and Redis\n", o.replicas, o.replicaDelay)
	stack, err := devstack.Start(ctx, devstack.Options{Replicas: o.replicas, ReplicaDelay: o.replicaDelay, Migrate: true})
	if err != nil {
		return err
	}
	defer stack.Close()

	if len(o.scenarios) > 0 {
		scs, err := runScenarios(ctx, stack, o, stderr)
		if err != nil {
			return err
		}
		var b bytes.Buffer
		renderScenarios(&b, scs, o)
		return emit(b.String(), o, stdout)
	}
	bins := []struct{ label, path string }{{"", o.apiBin}}
	if o.baselineBin != "" {
		bins = append(bins, struct{ label, path string }{" (baseline)", o.baselineBin})
	}
	var results []result
	for _, mode := range o.modes {
		for _, bin := range bins {
			fmt.Fprintf(stderr, "rywbench: %s%s mode, %d users for %s\n", mode, bin.label, o.users, o.duration)
			apis, err := stack.StartAPI(ctx, devstack.APIOptions{
				Binary: bin.path, Env: []string{"RYW_MODE=" + mode, "LOG_LEVEL=error"}, Output: stderr,
			})
			if err != nil {
				return err
			}
			res := measure(ctx, apis[0].URL, mode+bin.label, o)
			if err := apis[0].Stop(ctx); err != nil {
				return err
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			results = append(results, res)
		}
	}
	return emit(render(results, o), o, stdout)
}

// userArgs is the command line without the flags make bench itself passes
// (-api-bin, -out), as a user would write it in ARGS.
func userArgs(args []string) string {
	var kept []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && (name == "api-bin" || name == "out") {
			if !hasValue {
				i++ // its value is the next argument
			}
			continue
		}
		kept = append(kept, a)
	}
	return strings.Join(kept, " ")
}

// The markers between which -out replaces the report in a file that has
// them (docs/BENCHMARKS.md), keeping what is written around it.
const (
	beginMarker = "<!-- rywbench:begin -->"
	endMarker   = "<!-- rywbench:end -->"
)

// emit prints the report and, with -out, writes it to a file: between the
// markers if the file has them, else as the whole file.
func emit(report string, o options, stdout io.Writer) error {
	fmt.Fprint(stdout, report)
	if o.out == "" {
		return nil
	}
	old, err := os.ReadFile(o.out)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if o.suite == "peers" {
		return os.WriteFile(o.out, []byte(splicePeers(string(old), report)), 0o644)
	}
	if o.suite == "overload" {
		return os.WriteFile(o.out, []byte(spliceOverload(string(old), report)), 0o644)
	}
	return os.WriteFile(o.out, []byte(splice(string(old), report)), 0o644)
}

// splice puts report between the markers of doc, or returns it whole when
// doc has none.
func splice(doc, report string) string {
	return spliceAt(doc, report, beginMarker, endMarker, func() string { return report })
}

// spliceAt puts report between the markers begin and end of doc; a doc
// without them becomes what missing returns.
func spliceAt(doc, report, begin, end string, missing func() string) string {
	i := strings.Index(doc, begin)
	j := strings.Index(doc, end)
	if i < 0 || j < i {
		return missing()
	}
	return doc[:i+len(begin)] + "\n" + report + doc[j:]
}

// appendMarked returns doc with heading and report, between the markers
// begin and end, at its end.
func appendMarked(doc, heading, report, begin, end string) string {
	if doc != "" && !strings.HasSuffix(doc, "\n") {
		doc += "\n"
	}
	return doc + heading + begin + "\n" + report + end + "\n"
}

// commitOf says which commit the API binary was built from: as its build
// information records it, or else (GOFLAGS=-buildvcs=false, say) the
// checkout it runs in, which make bench has just built it from.
func commitOf(ctx context.Context, bin string) string {
	if out, err := exec.CommandContext(ctx, "go", "version", "-m", bin).Output(); err == nil {
		var rev, modified string
		for line := range strings.Lines(string(out)) {
			f := strings.Fields(line)
			if len(f) == 2 && f[0] == "build" {
				if v, ok := strings.CutPrefix(f[1], "vcs.revision="); ok {
					rev = v
				}
				if v, ok := strings.CutPrefix(f[1], "vcs.modified="); ok {
					modified = v
				}
			}
		}
		if len(rev) >= 7 {
			if modified == "true" {
				return rev[:7] + " with uncommitted changes"
			}
			return rev[:7]
		}
	}
	out, err := exec.CommandContext(ctx, "git", "rev-parse", "--short=7", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	rev := strings.TrimSpace(string(out))
	if st, err := exec.CommandContext(ctx, "git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(bytes.TrimSpace(st)) > 0 {
		return rev + " with uncommitted changes"
	}
	return rev
}

// result is one mode's measurements.
type result struct {
	mode          string
	reads         int
	replicaReads  int
	violations    int
	regressions   int // reads older than an earlier read of the same user (sessionUser)
	errors        int
	readLatency   []time.Duration
	writeLatency  []time.Duration
	reasons       map[string]int
	firstProblems []string
	replayChecks  float64 // replay checks the API sent (from its /metrics)
}

func (r *result) merge(o *result) {
	r.reads += o.reads
	r.replicaReads += o.replicaReads
	r.violations += o.violations
	r.regressions += o.regressions
	r.errors += o.errors
	r.readLatency = append(r.readLatency, o.readLatency...)
	r.writeLatency = append(r.writeLatency, o.writeLatency...)
	for k, v := range o.reasons {
		r.reasons[k] += v
	}
	for _, p := range o.firstProblems {
		if len(r.firstProblems) < 5 {
			r.firstProblems = append(r.firstProblems, p)
		}
	}
}

// measure runs the workload against one API for the duration.
func measure(ctx context.Context, api, mode string, o options) result {
	return measureWith(ctx, api, mode, o, user)
}

// measureWith runs the workload against one API for the duration, each of
// the -users users simulated by simulate.
func measureWith(ctx context.Context, api, mode string, o options, simulate func(context.Context, *http.Client, string, time.Duration) result) result {
	ctx, cancel := context.WithTimeout(ctx, o.duration)
	defer cancel()
	client := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: o.users, MaxConnsPerHost: 2 * o.users},
	}
	total := result{mode: mode, reasons: map[string]int{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range o.users {
		wg.Go(func() {
			r := simulate(ctx, client, api, o.readAfter)
			mu.Lock()
			total.merge(&r)
			mu.Unlock()
		})
	}
	wg.Wait()
	return total
}

// user writes its profile with an increasing version, then reads it back
// after a random delay, and checks that the read shows at least the version
// the write acknowledged.
func user(ctx context.Context, client *http.Client, api string, readAfter time.Duration) result {
	r := result{reasons: map[string]int{}}
	id := uuid.New()
	problem := func(format string, args ...any) {
		if len(r.firstProblems) < 5 {
			r.firstProblems = append(r.firstProblems, fmt.Sprintf(format, args...))
		}
	}
	for version := 1; ; version++ {
		body := fmt.Sprintf(`{"email":"bench@example.com","name":"v%d"}`, version)
		start := time.Now()
		status, _, _, err := loadgen.Call(ctx, client, http.MethodPost, api+"/api/me/profile", id, body)
		if ctx.Err() != nil {
			return r
		}
		if err != nil || status != http.StatusOK {
			r.errors++
			problem("write: %d %v", status, err)
			continue
		}
		r.writeLatency = append(r.writeLatency, time.Since(start))

		wait := time.Duration(rand.Int64N(int64(readAfter) + 1))
		select {
		case <-ctx.Done():
			return r
		case <-time.After(wait):
		}

		start = time.Now()
		status, header, got, err := loadgen.Call(ctx, client, http.MethodGet, api+"/api/me", id, "")
		if ctx.Err() != nil {
			return r
		}
		if err != nil || (status != http.StatusOK && status != http.StatusNotFound) {
			r.errors++
			problem("read: %d %v", status, err)
			continue
		}
		r.readLatency = append(r.readLatency, time.Since(start))
		r.reads++
		servedBy := header.Get("X-Served-By")
		if strings.HasPrefix(servedBy, "replica") {
			r.replicaReads++
		}
		r.reasons[header.Get("X-Routing-Reason")]++
		var seen int
		if status == http.StatusOK {
			fmt.Sscanf(got, "v%d", &seen)
		}
		if seen < version {
			r.violations++
			problem("read %d ms after writing v%d showed %q (served by %s, %s)",
				wait.Milliseconds(), version, got, servedBy, header.Get("X-Routing-Reason"))
		}
	}
}

// percentile returns the q-quantile (0..1) of ds, nearest rank.
func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

func ratio(a, b float64) string {
	if b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

// render writes the report as Markdown.
func render(results []result, o options) string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "Workload: %d users, %s per mode; each user saves its profile, waits a uniform 0-%s, reads it back.\n",
		o.users, o.duration, o.readAfter)
	fmt.Fprintf(&b, "Cluster: a primary and %d streaming replicas on loopback, the last one applying WAL %s late; Redis.\n\n", o.replicas, o.replicaDelay)
	w := tabwriter.NewWriter(&b, 0, 0, 1, ' ', tabwriter.Debug)
	fmt.Fprintln(w, "| mode\t own-write reads\t served by replicas\t violations\t errors\t read p50\t read p99\t write p50\t write p99\t")
	fmt.Fprintln(w, "|---\t---\t---\t---\t---\t---\t---\t---\t---\t")
	for _, r := range results {
		fmt.Fprintf(w, "| %s\t %d\t %.1f%%\t %d\t %d\t %s\t %s\t %s\t %s\t\n", r.mode, r.reads, share(r), r.violations, r.errors,
			ms(percentile(r.readLatency, .5)), ms(percentile(r.readLatency, .99)),
			ms(percentile(r.writeLatency, .5)), ms(percentile(r.writeLatency, .99)))
	}
	w.Flush()
	if o.baselineBin != "" {
		compareBuilds(&b, results)
	} else if len(results) > 1 {
		base := results[0]
		fmt.Fprintf(&b, "\nAgainst the baseline (%s mode, same run):\n\n", base.mode)
		w = tabwriter.NewWriter(&b, 0, 0, 1, ' ', tabwriter.Debug)
		fmt.Fprintln(w, "| mode\t replica share\t read p50\t read p99\t")
		fmt.Fprintln(w, "|---\t---\t---\t---\t")
		for _, r := range results[1:] {
			fmt.Fprintf(w, "| %s\t %+.1f points\t %s\t %s\t\n", r.mode, share(r)-share(base),
				ratio(float64(percentile(r.readLatency, .5)), float64(percentile(base.readLatency, .5))),
				ratio(float64(percentile(r.readLatency, .99)), float64(percentile(base.readLatency, .99))))
		}
		w.Flush()
	}
	fmt.Fprintln(&b, "\nRouting reasons of the own-write reads:")
	fmt.Fprintln(&b)
	for _, r := range results {
		var keys []string
		for k := range r.reasons {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		var parts []string
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s %d", k, r.reasons[k]))
		}
		fmt.Fprintf(&b, "- %s: %s\n", r.mode, strings.Join(parts, ", "))
	}
	for _, r := range results {
		if len(r.firstProblems) > 0 {
			fmt.Fprintf(&b, "\nFirst problems seen in %s mode:\n\n", r.mode)
			for _, p := range r.firstProblems {
				fmt.Fprintf(&b, "- %s\n", p)
			}
		}
	}
	return b.String()
}

// compareBuilds sets each mode beside the same mode of the baseline build.
func compareBuilds(b *bytes.Buffer, results []result) {
	byMode := map[string]result{}
	for _, r := range results {
		byMode[r.mode] = r
	}
	fmt.Fprintf(b, "\nThis build against the baseline build, mode by mode (same run):\n\n")
	w := tabwriter.NewWriter(b, 0, 0, 1, ' ', tabwriter.Debug)
	fmt.Fprintln(w, "| mode\t replica share\t read p50\t read p99\t write p50\t write p99\t")
	fmt.Fprintln(w, "|---\t---\t---\t---\t---\t---\t")
	for _, r := range results {
		base, ok := byMode[r.mode+" (baseline)"]
		if !ok {
			continue
		}
		fmt.Fprintf(w, "| %s\t %+.1f points\t %s\t %s\t %s\t %s\t\n", r.mode, share(r)-share(base),
			ratio(float64(percentile(r.readLatency, .5)), float64(percentile(base.readLatency, .5))),
			ratio(float64(percentile(r.readLatency, .99)), float64(percentile(base.readLatency, .99))),
			ratio(float64(percentile(r.writeLatency, .5)), float64(percentile(base.writeLatency, .5))),
			ratio(float64(percentile(r.writeLatency, .99)), float64(percentile(base.writeLatency, .99))))
	}
	w.Flush()
}

func share(r result) float64 {
	if r.reads == 0 {
		return 0
	}
	return 100 * float64(r.replicaReads) / float64(r.reads)
}

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ryw-go/ryw/internal/devstack"
	"github.com/ryw-go/ryw/internal/loadgen"
	"github.com/ryw-go/ryw/internal/proccpu"
)

// The overload suite (-suite overload) drives GET /api/me past the point
// where goodput peaks and watches what the service does to its replicas
// there (issue 20): the API processes of the throughput suite (off, time,
// lsn; with -baseline-bin each beside the same mode of another build), on
// one devstack cluster, each in a closed loop (wrk) at 1x, 4x and 16x
// -conns connections, -conns being taken as the concurrency where goodput
// peaks (it is not searched for). Per phase: goodput (2xx answers per
// second), p99 latency, non-2xx answers, how many times a replica left the
// rotation (the monitor's "replica out of rotation" log lines, which every
// build writes once per transition), and reads retried on the primary
// (ryw_read_retries_total); and where the CPU went per answer: each
// process's, and the machine's busy, idle and stolen time (/proc/stat), so
// that a fall in goodput can be told apart from a machine that slowed
// down. A control takes the same turns: GET /healthz, which touches no
// node, on the first API process, for what more connections cost when no
// request does any of ryw's work. Then a cold start: a fresh API process is
// started while the closed loop at 1x is already knocking on its port, and
// the same counts are taken over its first seconds. The levels are run
// -rounds times, the APIs taking turns in a rotating order, and the report
// gives each level's median goodput and p99 and the counts summed over
// the rounds: a single 8 s phase on this machine varies by 10-15%.

// healthzLabel names the control's phases: GET /healthz on the first API
// process.
const healthzLabel = "healthz"

// wrkHealthzScript makes wrk send GET /healthz, formatted once in init
// (before it, wrk has not set the Host header, and a request without one
// is answered 400).
const wrkHealthzScript = `
local req
init = function(args)
  req = wrk.format("GET", "/healthz")
end
request = function() return req end
`

// proxiedSuffix labels an API process measured behind the proxy (-proxy).
const proxiedSuffix = "+haproxy"

// overloadTarget is what one label's phases load: an API process, directly
// or through a proxy, with one of wrkSetup's scripts.
type overloadTarget struct {
	api    *devstack.API
	logs   string // the API process's log directory
	url    string // where wrk sends its requests
	script string
	proxy  *devstack.HAProxy // nil: direct
}

// overloadUsage is the CPU time used so far by the processes of one
// target's phase, by the proxy (0 without one) and by the whole machine.
type overloadUsage struct {
	cpu     cpuUse
	proxy   time.Duration
	machine proccpu.MachineUse
}

// usage reads t's overloadUsage; a phase's is the difference of two.
func (b *tpBench) usage(t overloadTarget) (overloadUsage, error) {
	var u overloadUsage
	var err error
	if u.cpu, err = b.cpu(t.api); err != nil {
		return u, err
	}
	if t.proxy != nil {
		if u.proxy, err = proccpu.Of(t.proxy.Pid(), false); err != nil {
			return u, fmt.Errorf("haproxy: %w", err)
		}
	}
	u.machine, err = proccpu.Machine()
	return u, err
}

// overloadTargets are the suite's labels, in order, and what each loads:
// every API process of the throughput suite; with -proxy haproxy, each
// again behind an HAProxy of its own that sends it at most -conns requests
// at once over connections it reuses
// (labelled with proxiedSuffix); and the control, GET /healthz on the
// first API process (off mode's), which touches no node: what more
// connections cost when no request does any of ryw's work.
func (b *tpBench) overloadTargets(ctx context.Context, o options) (map[string]overloadTarget, []string, error) {
	targets := map[string]overloadTarget{}
	labels := slices.Clone(b.labels)
	for _, l := range b.labels {
		targets[l] = overloadTarget{api: b.apis[l], logs: filepath.Join(b.stack.Dir, "api-"+l), url: b.apis[l].URL, script: "me.lua"}
	}
	if o.proxy == "haproxy" {
		for _, l := range b.labels {
			h, err := b.stack.StartHAProxy(ctx, strings.TrimPrefix(b.apis[l].URL, "http://"), o.conns)
			if err != nil {
				return nil, nil, err
			}
			t := targets[l]
			t.url, t.proxy = h.URL(), h
			targets[l+proxiedSuffix] = t
			labels = append(labels, l+proxiedSuffix)
		}
	}
	first := targets[b.labels[0]]
	first.script = "healthz.lua"
	targets[healthzLabel] = first
	return targets, append(labels, healthzLabel), nil
}

// overloadLevels are the concurrency multiples of -conns.
var overloadLevels = []int{1, 4, 16}

// coldStartLoad is how long the cold start's closed loop runs, from before
// the API process starts.
const coldStartLoad = 10 * time.Second

// overloadPhase is one closed loop on one API process.
type overloadPhase struct {
	label    string
	round    int
	conns    int
	secs     float64
	requests uint64 // answers, any status
	non2xx   uint64
	sockErrs uint64 // connect, read, write errors and timeouts
	p99      time.Duration
	takenOut int     // replicas taken out of rotation during the phase
	retries  float64 // reads retried on the primary during the phase
	// startup is, for a cold start, how long the API process took from
	// its start to answering /healthz.
	startup time.Duration
	cpu     cpuUse             // each process's CPU time in the phase
	proxy   time.Duration      // the proxy's CPU time in the phase (-proxy)
	machine proccpu.MachineUse // what the machine's CPUs did in the phase
}

func (p overloadPhase) goodput() float64 {
	if p.secs == 0 {
		return 0
	}
	return float64(p.requests-min(p.non2xx, p.requests)) / p.secs
}

type overloadReport struct {
	phases    []overloadPhase // by level, then label
	cold      []overloadPhase // by label
	labels    []string
	generator string
	proxied   bool // some labels ran behind a proxy (-proxy): its CPU is a column
}

var (
	wrkP99RE     = regexp.MustCompile(`(?m)^\s+99%\s+([0-9.]+)(us|ms|s|m)\s*$`)
	retriesAnyRE = regexp.MustCompile(`(?m)^ryw_read_retries_total\{[^}]*\} ([0-9.e+]+)$`)
)

// takenOutLine is what every build's monitor logs, once, when a replica
// leaves the rotation (see Monitor.takeOut).
const takenOutLine = "replica out of rotation"

func runOverload(ctx context.Context, o options, stderr io.Writer) (*overloadReport, error) {
	if !haveWrk() {
		return nil, fmt.Errorf("-suite overload needs wrk (apt-get install wrk)")
	}
	b, err := startTPBench(ctx, o, o.replicas, stderr)
	if err != nil {
		return nil, err
	}
	defer b.stack.Close()
	if _, err := b.seed(ctx, o.population); err != nil {
		return nil, err
	}
	seededAt := time.Now()
	if err := b.stack.Primary.Exec(ctx, "VACUUM (FREEZE, ANALYZE) users"); err != nil {
		return nil, err
	}
	if err := b.stack.WaitCaughtUp(ctx); err != nil {
		return nil, err
	}
	// The seeded writes must be past the read-your-writes window.
	if err := waitUntil(ctx, seededAt.Add(o.window+time.Second)); err != nil {
		return nil, err
	}
	targets, labels, err := b.overloadTargets(ctx, o)
	if err != nil {
		return nil, err
	}
	rep := &overloadReport{labels: labels, generator: "wrk", proxied: o.proxy != ""}
	for round := range o.rounds {
		for _, level := range overloadLevels {
			for i := range labels {
				// The APIs take turns in an order that rotates with the
				// round, so that none always follows the same one.
				label := labels[(i+round)%len(labels)]
				conns := level * o.conns
				fmt.Fprintf(stderr, "rywbench:   overload round %d/%d %s: %d connections (%dx) for %s\n", round+1, o.rounds, label, conns, level, o.phase)
				t := targets[label]
				api, logs := t.api, t.logs
				out0, r0 := countLines(logs, takenOutLine), scrapeSum(ctx, api.URL, retriesAnyRE)
				settle()
				before, err := b.usage(t)
				if err != nil {
					return nil, err
				}
				p, err := b.wrk(ctx, t.url, conns, o.phase, t.script)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", label, err)
				}
				after, err := b.usage(t)
				if err != nil {
					return nil, err
				}
				gen := p.cpu.gen // wrk's own, not this process's
				p.cpu, p.machine, p.proxy = after.cpu.sub(before.cpu), after.machine.Sub(before.machine), after.proxy-before.proxy
				p.cpu.gen = gen
				p.label, p.round = label, round
				taken := linesWith(logs, takenOutLine)
				p.takenOut = len(taken) - out0
				for _, line := range taken[min(out0, len(taken)):] {
					// Why: the monitor's line names the check or query that failed.
					fmt.Fprintf(stderr, "rywbench:     %s\n", line)
				}
				p.retries = scrapeSum(ctx, api.URL, retriesAnyRE) - r0
				fmt.Fprintf(stderr, "rywbench:     %.0f 2xx/s, p99 %s, %d non-2xx, %d out of rotation, %.0f retried\n", p.goodput(), ms(p.p99), p.non2xx, p.takenOut, p.retries)
				rep.phases = append(rep.phases, p)
			}
		}
	}
	for _, label := range b.labels {
		fmt.Fprintf(stderr, "rywbench:   cold start %s: %d connections waiting\n", label, o.conns)
		p, err := b.coldStart(ctx, label)
		if err != nil {
			return nil, fmt.Errorf("cold start %s: %w", label, err)
		}
		fmt.Fprintf(stderr, "rywbench:     up in %s; %d answers, %d non-2xx, %d out of rotation, %.0f retried\n", ms(p.startup), p.requests, p.non2xx, p.takenOut, p.retries)
		rep.cold = append(rep.cold, p)
	}
	return rep, nil
}

// coldStart starts a fresh API process labelled label while a closed loop
// of -conns connections already waits for its port, and counts what
// happened until the loop ends (coldStartLoad after it began).
func (b *tpBench) coldStart(ctx context.Context, label string) (overloadPhase, error) {
	// wrk gives up at once if its first connection is refused: a listener
	// that accepts nothing holds the port until the loop runs, and is
	// closed just before the API process starts on it (the loop's
	// connections are then refused, and retried, until the API listens).
	hold, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return overloadPhase{}, err
	}
	addr := hold.Addr().String()
	logDir := filepath.Join(b.stack.Dir, "cold-"+label)
	if err := os.Mkdir(logDir, 0o755); err != nil {
		return overloadPhase{}, err
	}
	type result struct {
		p   overloadPhase
		err error
	}
	done := make(chan result, 1)
	settle()
	go func() {
		p, err := b.wrk(ctx, "http://"+addr, b.o.conns, coldStartLoad, "me.lua")
		done <- result{p, err}
	}()
	// Until wrk has made its first connection (it holds it, unanswered).
	for b.listenQueue(addr) == 0 && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	hold.Close()
	start := time.Now()
	apis, err := b.stack.StartAPI(ctx, devstack.APIOptions{Binary: apiBinary(b.o, label), Env: append(apiEnv(b.stack, b.o, label), "PPROF_ADDR="), Addr: addr, LogDir: logDir})
	if err != nil {
		<-done
		return overloadPhase{}, err
	}
	startup := time.Since(start)
	r := <-done
	defer apis[0].Stop(context.WithoutCancel(ctx))
	if r.err != nil {
		return overloadPhase{}, r.err
	}
	p := r.p
	p.label, p.startup = label, startup
	p.takenOut = countLines(logDir, takenOutLine)
	p.retries = scrapeSum(ctx, apis[0].URL, retriesAnyRE)
	return p, nil
}

// listenQueue is how many connections wait, unaccepted, on the listener
// at addr (ss's Recv-Q of a listening socket), 0 if unknown.
func (b *tpBench) listenQueue(addr string) int {
	out, err := exec.Command("ss", "-Hltn", "sport = :"+addr[strings.LastIndexByte(addr, ':')+1:]).Output()
	if err != nil {
		return 1 // cannot tell: go on
	}
	f := strings.Fields(string(out))
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.Atoi(f[1])
	return n
}

// wrk runs a closed loop of conns connections for d, with script (of
// wrkSetup's: me.lua, GET /api/me for the seeded users, or healthz.lua),
// and reads its counts and p99.
func (b *tpBench) wrk(ctx context.Context, url string, conns int, d time.Duration, script string) (overloadPhase, error) {
	if err := b.wrkSetup(); err != nil {
		return overloadPhase{}, err
	}
	cmd := exec.CommandContext(ctx, wrkProgram, "-t", "2", "-c", strconv.Itoa(conns), "-d", strconv.Itoa(max(1, int(d.Seconds())))+"s",
		"--timeout", "10s", "--latency", "-s", filepath.Join(b.wrkFiles, script), url, "--", filepath.Join(b.wrkFiles, "users.txt"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return overloadPhase{}, fmt.Errorf("wrk: %v: %s", err, out)
	}
	p := overloadPhase{conns: conns}
	p.cpu.gen = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	if p.requests, p.secs, p.non2xx, err = parseWrk(out); err != nil {
		return p, err
	}
	if m := wrkErrRE.FindSubmatch(out); m != nil {
		for _, g := range m[1:] {
			n, _ := strconv.ParseUint(string(g), 10, 64)
			p.sockErrs += n
		}
	}
	if m := wrkP99RE.FindSubmatch(out); m != nil {
		v, _ := strconv.ParseFloat(string(m[1]), 64)
		unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second, "m": time.Minute}[string(m[2])]
		p.p99 = time.Duration(v * float64(unit))
	}
	return p, nil
}

// wrkSetup writes wrk's script and the seeded users' ids, once.
func (b *tpBench) wrkSetup() error {
	if b.wrkFiles != "" {
		return nil
	}
	dir, err := os.MkdirTemp(b.stack.Dir, "wrk-")
	if err != nil {
		return err
	}
	var ids strings.Builder
	for _, h := range b.headers {
		ids.WriteString(h.Get("X-Demo-Userid") + "\n")
	}
	if err := os.WriteFile(filepath.Join(dir, "users.txt"), []byte(ids.String()), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "me.lua"), []byte(wrkScript), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "healthz.lua"), []byte(wrkHealthzScript), 0o644); err != nil {
		return err
	}
	b.wrkFiles = dir
	return nil
}

// countLines counts the lines containing s in the files of dir.
func countLines(dir, s string) int {
	return len(linesWith(dir, s))
}

// linesWith returns the lines of dir's logs that hold s, file by file.
func linesWith(dir, s string) []string {
	files, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	var out []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for line := range bytes.Lines(data) {
			if bytes.Contains(line, []byte(s)) {
				out = append(out, string(bytes.TrimSpace(line)))
			}
		}
	}
	return out
}

// scrapeSum adds up every series of the API's /metrics that re matches (0
// if none).
func scrapeSum(ctx context.Context, api string, re *regexp.Regexp) float64 {
	body, err := scrapeMetrics(ctx, api)
	if err != nil {
		return 0
	}
	var sum float64
	for _, m := range re.FindAllSubmatch(body, -1) {
		v, _ := strconv.ParseFloat(string(m[1]), 64)
		sum += v
	}
	return sum
}

func renderOverload(rep *overloadReport, o options, commit string) string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "Run of %s, commit %s: `make bench ARGS=\"%s\"`.\n\n", time.Now().UTC().Format("2006-01-02"), commit, o.args)
	fmt.Fprintf(&b, "GET /api/me for %d seeded users, closed loop (%s, 2 threads, 10 s timeout), %s per phase, at 1x, 4x and 16x %d connections (1x is `-conns`); a primary and %d streaming replicas on loopback; the API processes of the throughput suite, taking turns in a rotating order, %d rounds. Goodput is the median over the rounds of the 2xx answers per second (range: the lowest and highest round), vs peak is against the level with the highest median, vs off is the median over the rounds of the ratio to the off-mode process's goodput at the same level in the same round (the two phases ran in the same turn, so what the machine did to both cancels out: what ryw's work loses as the connections grow shows as a fall down this column), and p99 is the median round's; the counts are summed over the rounds; out of rotation counts the monitor's \"replica out of rotation\" transitions; retried counts `ryw_read_retries_total` (every cause). The %s rows are the control: GET /healthz, which touches no node, on the %s process, in the same turns: what more connections cost the HTTP server and the machine when no request does any of ryw's work.%s\n\n",
		o.population, rep.generator, o.phase, o.conns, o.replicas, o.rounds, healthzLabel, rep.labels[0], proxiedNote(rep, o))
	w := tabwriter.NewWriter(&b, 0, 0, 1, ' ', tabwriter.Debug)
	fmt.Fprintln(w, "| API\t connections\t goodput (2xx/s)\t range\t vs peak\t vs off\t p99\t non-2xx\t socket errors\t out of rotation\t retried on the primary\t")
	fmt.Fprintln(w, "|---\t---\t---\t---\t---\t---\t---\t---\t---\t---\t---\t")
	for _, label := range rep.labels {
		levels := overloadLevelsOf(rep.phases, label, o.conns)
		peak := 0.0
		for _, l := range levels {
			peak = max(peak, l.goodput)
		}
		ref := offPeer(label, rep.labels)
		for _, l := range levels {
			vsOff := "-"
			if r, ok := pairedRatio(rep.phases, label, ref, l.conns); ok {
				vsOff = fmt.Sprintf("%.2fx", r)
			}
			fmt.Fprintf(w, "| %s\t %d (%dx)\t %.0f\t %.0f-%.0f\t %s\t %s\t %s\t %d\t %d\t %d\t %.0f\t\n", label, l.conns, l.conns/o.conns, l.goodput, l.min, l.max,
				ratio(l.goodput, peak), vsOff, ms(l.p99), l.non2xx, l.sockErrs, l.takenOut, l.retries)
		}
	}
	w.Flush()
	fmt.Fprintf(&b, "\nWhere the CPU went, per answer (medians over the rounds): each process's CPU time from /proc/<pid>/stat (PostgreSQL is every node's postmaster with its backends; wrk is the generator), the machine's busy time from /proc/stat (every process, the kernel's interrupts included), other is busy minus the processes named, and idle and stolen are shares of the machine's CPU time in the phase (stolen: the hypervisor ran something else while this machine wanted to run).\n\n")
	w = tabwriter.NewWriter(&b, 0, 0, 1, ' ', tabwriter.Debug)
	proxyCol, proxySep := "", ""
	if rep.proxied {
		proxyCol, proxySep = " HAProxy µs\t", "---\t"
	}
	fmt.Fprintln(w, "| API\t connections\t API µs\t PostgreSQL µs\t Redis µs\t wrk µs\t"+proxyCol+" machine busy µs\t other µs\t idle\t stolen\t")
	fmt.Fprintln(w, "|---\t---\t---\t---\t---\t---\t"+proxySep+"---\t---\t---\t---\t")
	for _, label := range rep.labels {
		for _, l := range overloadLevelsOf(rep.phases, label, o.conns) {
			other := l.busy - l.api - l.pg - l.redis - l.gen - l.proxy
			proxy := ""
			if rep.proxied {
				proxy = " " + us(l.proxy) + "\t"
			}
			fmt.Fprintf(w, "| %s\t %d (%dx)\t %s\t %s\t %s\t %s\t%s %s\t %s\t %.0f%%\t %.0f%%\t\n", label, l.conns, l.conns/o.conns,
				us(l.api), us(l.pg), us(l.redis), us(l.gen), proxy, us(l.busy), us(other), 100*l.idle, 100*l.steal)
		}
	}
	w.Flush()
	fmt.Fprintf(&b, "\nCold start: a fresh API process started while %d connections already wait for its port; counted over its first %s (from its start to the loop's end; start-up to /healthz included).\n\n", o.conns, coldStartLoad)
	w = tabwriter.NewWriter(&b, 0, 0, 1, ' ', tabwriter.Debug)
	fmt.Fprintln(w, "| API\t start-up\t answers\t goodput (2xx/s)\t p99\t non-2xx\t out of rotation\t retried on the primary\t")
	fmt.Fprintln(w, "|---\t---\t---\t---\t---\t---\t---\t---\t")
	for _, p := range rep.cold {
		fmt.Fprintf(w, "| %s\t %s\t %d\t %.0f\t %s\t %d\t %d\t %.0f\t\n", p.label, ms(p.startup), p.requests, p.goodput(), ms(p.p99), p.non2xx, p.takenOut, p.retries)
	}
	w.Flush()
	return b.String()
}

// offPeer is the label of the off-mode process that label's goodput is
// compared with: the one run alike (the same build, behind the same
// proxy), or "" for the off-mode processes themselves, the control and a
// run without off mode.
func offPeer(label string, labels []string) string {
	if label == healthzLabel {
		return ""
	}
	_, alike, _ := strings.Cut(label, "+")
	ref := "off"
	if alike != "" {
		ref += "+" + alike
	}
	if ref == label || !slices.Contains(labels, ref) {
		return ""
	}
	return ref
}

// pairedRatio is the median over the rounds of label's goodput at conns
// over ref's in the same round; false when no round has both.
func pairedRatio(phases []overloadPhase, label, ref string, conns int) (float64, bool) {
	refs := map[int]float64{}
	for _, p := range phases {
		if p.label == ref && p.conns == conns {
			refs[p.round] = p.goodput()
		}
	}
	var ratios []float64
	for _, p := range phases {
		if r, ok := refs[p.round]; ok && p.label == label && p.conns == conns && r > 0 {
			ratios = append(ratios, p.goodput()/r)
		}
	}
	if len(ratios) == 0 {
		return 0, false
	}
	return loadgen.Median(ratios), true
}

// proxiedNote says what the proxied rows are, when there are any.
func proxiedNote(rep *overloadReport, o options) string {
	if !rep.proxied {
		return ""
	}
	return fmt.Sprintf(" The rows labelled <mode>%s are the same API process behind an HAProxy of its own (Debian's haproxy; `maxconn %d` to the process, `http-reuse always`, its queue holding the requests beyond them): the clients' connections end at the proxy, which sends the process at most %d requests at once over a few connections it reuses.", proxiedSuffix, o.conns, o.conns)
}

// overloadLevel is one API's phases at one concurrency, over the rounds:
// medians of the rates and p99s, the counts summed.
type overloadLevel struct {
	conns             int
	goodput, min, max float64
	p99               time.Duration
	non2xx, sockErrs  uint64
	takenOut          int
	retries           float64
	// Medians over the rounds of the CPU time per answer, by process,
	// and of the machine's: busy, and the shares of its CPUs' time that
	// were idle or stolen by the hypervisor.
	api, pg, redis, gen, proxy, busy time.Duration
	idle, steal                      float64
}

// overloadLevelsOf sums up label's phases by level (base is -conns).
func overloadLevelsOf(phases []overloadPhase, label string, base int) []overloadLevel {
	var out []overloadLevel
	for _, level := range overloadLevels {
		l := overloadLevel{conns: level * base}
		var rates, p99s []float64
		var use []overloadPhase
		for _, p := range phases {
			if p.label != label || p.conns != l.conns {
				continue
			}
			use = append(use, p)
			rates = append(rates, p.goodput())
			p99s = append(p99s, float64(p.p99))
			l.non2xx += p.non2xx
			l.sockErrs += p.sockErrs
			l.takenOut += p.takenOut
			l.retries += p.retries
		}
		if len(rates) == 0 {
			continue
		}
		l.goodput, l.min, l.max = loadgen.Median(rates), slices.Min(rates), slices.Max(rates)
		l.p99 = time.Duration(loadgen.Median(p99s))
		perAnswer := func(f func(overloadPhase) time.Duration) time.Duration {
			return time.Duration(loadgen.Median(each(use, func(p overloadPhase) float64 {
				if p.requests == 0 {
					return 0
				}
				return float64(f(p)) / float64(p.requests)
			})))
		}
		l.api = perAnswer(func(p overloadPhase) time.Duration { return p.cpu.api })
		l.pg = perAnswer(func(p overloadPhase) time.Duration { return p.cpu.pg })
		l.redis = perAnswer(func(p overloadPhase) time.Duration { return p.cpu.redis })
		l.gen = perAnswer(func(p overloadPhase) time.Duration { return p.cpu.gen })
		l.proxy = perAnswer(func(p overloadPhase) time.Duration { return p.proxy })
		l.busy = perAnswer(func(p overloadPhase) time.Duration { return p.machine.Busy })
		share := func(f func(proccpu.MachineUse) time.Duration) float64 {
			return loadgen.Median(each(use, func(p overloadPhase) float64 {
				all := p.machine.Busy + p.machine.Idle + p.machine.Steal
				if all <= 0 {
					return 0
				}
				return float64(f(p.machine)) / float64(all)
			}))
		}
		l.idle = share(func(m proccpu.MachineUse) time.Duration { return m.Idle })
		l.steal = share(func(m proccpu.MachineUse) time.Duration { return m.Steal })
		out = append(out, l)
	}
	return out
}

// Markers of the overload section's report in docs/BENCHMARKS.md.
const (
	overloadBegin = "<!-- rywbench-overload:begin -->"
	overloadEnd   = "<!-- rywbench-overload:end -->"
)

// spliceOverload puts report between the overload markers of doc, or
// appends a section with them.
func spliceOverload(doc, report string) string {
	return spliceAt(doc, report, overloadBegin, overloadEnd, func() string {
		return appendMarked(doc, "\n## Overload\n\n", report, overloadBegin, overloadEnd)
	})
}

// scrapeMetrics reads the API's /metrics.
func scrapeMetrics(ctx context.Context, api string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, api+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

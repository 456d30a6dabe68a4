package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	"github.com/redis/go-redis/v9"
	vegeta "github.com/tsenart/vegeta/v12/lib"

	"github.com/ryw-go/ryw/internal/devstack"
	"github.com/ryw-go/ryw/internal/loadgen"
	"github.com/ryw-go/ryw/internal/proccpu"
	"github.com/ryw-go/ryw/ryw"
)

// The throughput suite (the default) answers "what does read-your-writes
// cost per request, against what the hardware can do?". On one cluster it
// runs an API process per mode, all at once, and gives them the same load in
// turns, over several rounds:
//
//   - a closed loop: -conns connections send GET /api/me as fast as the API
//     answers, each request for the next of -population users who all wrote
//     their profile long before (the read-your-writes window is past, their
//     marks are in Redis): the peak;
//   - a constant rate of half the off-mode peak: p50 and p99 latency;
//   - pgbench -S -M prepared on the same primary and redis-benchmark GET on
//     the same Redis: what the nodes themselves can do;
//   - CPU per request of every process: the API, PostgreSQL (all nodes),
//     Redis, the load generator (this process) and, with -pooler, PgBouncer
//     (all of them).
//
// Then the same with other replica counts and populations (-scale), and the
// own-write workload for the offload and violations.

// tpConfig is one cluster shape the suite measures.
type tpConfig struct {
	replicas   int
	population int
	rounds     int
}

func (c tpConfig) String() string {
	return fmt.Sprintf("%d replica%s, %s users", c.replicas, plural(c.replicas), humanCount(c.population))
}

// phase is one mode's measurement in one phase of one round.
type phase struct {
	requests uint64
	secs     float64
	bad      int    // transport errors and answers other than 200
	replica  uint64 // answers served by a replica
	// lookups and pipelines are the tracker's, from the API's /metrics.
	lookups, pipelines float64
	p50, p99           time.Duration
	cpu                cpuUse
}

func (p phase) rps() float64 { return float64(p.requests) / p.secs }

// perRequest is CPU time per request.
func (p phase) perRequest(d time.Duration) time.Duration {
	if p.requests == 0 {
		return 0
	}
	return d / time.Duration(p.requests)
}

// cpuUse is the CPU time each process used in a phase. pooler is every
// pgbouncer's (none without -pooler).
type cpuUse struct{ api, pg, redis, gen, pooler time.Duration }

func (c cpuUse) sub(o cpuUse) cpuUse {
	return cpuUse{c.api - o.api, c.pg - o.pg, c.redis - o.redis, c.gen - o.gen, c.pooler - o.pooler}
}

// modeRounds holds one mode's phases, one per round.
type modeRounds struct {
	peak []phase
	rate []phase
}

// limits are what the nodes do on their own, measured in the same run.
type limits struct {
	// pgbench takes a turn in every round, like a mode, so that it meets
	// the same machine as the API it is compared with: per round, its tps
	// and its CPU per transaction (pg, and pgbench itself in gen).
	pgbench       []pgbenchRun
	redisGetRPS   float64
	redisMemUser  float64       // bytes of Redis memory per user with marks
	idlePolls     float64       // monitor polls per second per API process
	idleAPI       time.Duration // CPU per second of one idle API process
	idlePG        time.Duration // CPU per second of PostgreSQL with all the idle APIs polling
	idleRedis     time.Duration // CPU per second of Redis with no requests
	idleProcesses int
}

// pgbenchRun is one round's turn of pgbench -S -M prepared.
type pgbenchRun struct {
	tps float64
	cpu cpuUse
}

// pgbenchTPS is the median over the rounds.
func (l limits) pgbenchTPS() float64 {
	return loadgen.Median(each(l.pgbench, func(r pgbenchRun) float64 { return r.tps }))
}

// pgbenchCPU is the median CPU per transaction over the rounds.
func (l limits) pgbenchCPU() cpuUse {
	pg := loadgen.Median(each(l.pgbench, func(r pgbenchRun) float64 { return float64(r.cpu.pg) }))
	gen := loadgen.Median(each(l.pgbench, func(r pgbenchRun) float64 { return float64(r.cpu.gen) }))
	return cpuUse{pg: time.Duration(pg), gen: time.Duration(gen)}
}

// offVsPgbench is off mode's peak against pgbench's, the median of the
// rounds' ratios (each round's off turn against the same round's pgbench
// turn), or 0 when either is missing.
func offVsPgbench(c configResult) float64 {
	off := c.byMode["off"]
	if off == nil {
		return 0
	}
	var ratios []float64
	for i, r := range c.limits.pgbench {
		if i < len(off.peak) && r.tps > 0 {
			ratios = append(ratios, off.peak[i].rps()/r.tps)
		}
	}
	return loadgen.Median(ratios)
}

// roundRatios lists the rounds' off/pgbench ratios.
func roundRatios(c configResult) string {
	off := c.byMode["off"]
	var out []string
	for i, r := range c.limits.pgbench {
		if off != nil && i < len(off.peak) && r.tps > 0 {
			out = append(out, fmt.Sprintf("%.3f", off.peak[i].rps()/r.tps))
		}
	}
	return strings.Join(out, " ")
}

// configResult is everything measured on one cluster shape.
type configResult struct {
	cfg    tpConfig
	modes  []string // the API processes' labels (apiLabels)
	rate   int      // the constant rate: half the off-mode peak of the first round
	byMode map[string]*modeRounds
	limits limits
	own    []result // the own-write workload, per mode (main config only)
	// timelines are the pause timeline, per mode (main config only).
	timelines []timeline
	// generator is what ran the closed loop.
	generator string
	// healthz is GET /healthz at the constant rate: the generator's and
	// the HTTP stack's own latency, with no node involved.
	healthz phase
	// poolerVersion is `pgbouncer --version`'s first line (-pooler only).
	poolerVersion string
}

// tpBench runs the suite on one stack.
type tpBench struct {
	o       options
	stack   *devstack.Stack
	labels  []string                 // the API processes (apiLabels)
	apis    map[string]*devstack.API // by label
	headers []http.Header            // one per seeded user
	stderr  io.Writer
	seeded  int

	generator     string // what measured the closed loop
	wrkFiles      string // wrk's script and user list
	poolerVersion string // with -pooler
}

func runThroughput(ctx context.Context, o options, stderr io.Writer) ([]configResult, error) {
	configs := []tpConfig{{replicas: o.replicas, population: o.population, rounds: o.rounds}}
	if o.scale {
		// Bigger population on the same stack, then the other replica counts.
		configs = append(configs, tpConfig{replicas: o.replicas, population: 100 * o.population, rounds: 1})
		for _, r := range []int{1, 2, 4} {
			if r != o.replicas {
				configs = append(configs, tpConfig{replicas: r, population: o.population, rounds: 1})
			}
		}
	}
	var out []configResult
	var b *tpBench
	defer func() {
		if b != nil {
			b.stack.Close()
		}
	}()
	for i, cfg := range configs {
		if b == nil || b.stack == nil || len(b.stack.Replicas) != cfg.replicas {
			if b != nil {
				b.stack.Close()
			}
			var err error
			if b, err = startTPBench(ctx, o, cfg.replicas, stderr); err != nil {
				return nil, err
			}
		}
		fmt.Fprintf(stderr, "rywbench: %s, %d round(s)\n", cfg, cfg.rounds)
		res, err := b.measureConfig(ctx, cfg, i == 0)
		if err != nil {
			return nil, err
		}
		out = append(out, res)
	}
	return out, nil
}

func startTPBench(ctx context.Context, o options, replicas int, stderr io.Writer) (*tpBench, error) {
	b := &tpBench{o: o, labels: apiLabels(o), apis: map[string]*devstack.API{}, stderr: stderr}
	if o.pooler == "" {
		fmt.Fprintf(stderr, "rywbench: starting a primary, %d replicas and Redis\n", replicas)
	} else {
		var err error
		if b.poolerVersion, err = pgbouncerVersion(ctx); err != nil {
			return nil, err
		}
		fmt.Fprintf(stderr, "rywbench: starting a primary, %d replicas and Redis, %s in %s pooling in front of every node\n",
			replicas, b.poolerVersion, o.pooler)
	}
	stack, err := devstack.Start(ctx, devstack.Options{Replicas: replicas, Migrate: true, Pooler: o.pooler})
	if err != nil {
		return nil, err
	}
	b.stack = stack
	if err := initPgbench(ctx, stack); err != nil {
		stack.Close()
		return nil, err
	}
	for _, label := range b.labels {
		// Each process logs to a file of its own in the stack's directory.
		logDir := filepath.Join(stack.Dir, "api-"+label)
		if err := os.Mkdir(logDir, 0o755); err != nil {
			stack.Close()
			return nil, err
		}
		apis, err := stack.StartAPI(ctx, devstack.APIOptions{Binary: apiBinary(o, label), Env: apiEnv(stack, o, label), LogDir: logDir})
		if err != nil {
			stack.Close()
			return nil, fmt.Errorf("%s: %w", label, err)
		}
		b.apis[label] = apis[0]
	}
	return b, nil
}

func pgbenchConn(p *devstack.Node) []string {
	return []string{"-h", "127.0.0.1", "-p", strconv.Itoa(p.Port), "-U", "postgres"}
}

// initPgbench creates pgbench's tables (scale 1: 100k accounts, in memory
// like the users) once per stack, and lets the replicas replay them and the
// primary checkpoint before anything is measured.
func initPgbench(ctx context.Context, stack *devstack.Stack) error {
	p := stack.Primary
	if err := p.Exec(ctx, "CREATE DATABASE pgbench"); err != nil {
		return err
	}
	if out, err := exec.CommandContext(ctx, p.Program("pgbench"), append(pgbenchConn(p), "-i", "-q", "-s", "1", "pgbench")...).CombinedOutput(); err != nil {
		return fmt.Errorf("pgbench -i: %v: %s", err, lastLine(out))
	}
	if err := p.Exec(ctx, "CHECKPOINT"); err != nil {
		return err
	}
	return stack.WaitCaughtUp(ctx)
}

func (b *tpBench) measureConfig(ctx context.Context, cfg tpConfig, main bool) (configResult, error) {
	res := configResult{cfg: cfg, modes: b.labels, byMode: map[string]*modeRounds{}, poolerVersion: b.poolerVersion}
	for _, m := range b.labels {
		res.byMode[m] = &modeRounds{}
	}
	var err error
	if res.limits.redisMemUser, err = b.seed(ctx, cfg.population); err != nil {
		return res, err
	}
	seededAt := time.Now()
	// Settle the new rows before measuring: freeze them (so that no read,
	// on any node, has hint bits to set), let autovacuum find nothing to
	// do, and checkpoint.
	for _, sql := range []string{"VACUUM (FREEZE, ANALYZE) users", "CHECKPOINT"} {
		if err := b.stack.Primary.Exec(ctx, sql); err != nil {
			return res, fmt.Errorf("%s: %w", sql, err)
		}
	}
	if err := b.stack.WaitCaughtUp(ctx); err != nil {
		return res, err
	}
	if err := b.idle(ctx, &res.limits); err != nil {
		return res, err
	}
	if err := b.nodeLimits(ctx, &res.limits); err != nil {
		return res, err
	}
	// Every seeded write must be past the read-your-writes window (5 s by
	// default), as the workload says; the limits above usually take longer.
	if err := waitUntil(ctx, seededAt.Add(b.o.window+time.Second)); err != nil {
		return res, err
	}
	for _, m := range b.labels {
		if _, err := b.attack(ctx, b.apis[m], 0, time.Second); err != nil { // warm the pools
			return res, err
		}
	}
	for round := range cfg.rounds {
		// Rotate the order, so that no mode always goes first or last.
		order := slices.Clone(b.labels)
		for range round {
			order = append(order[1:], order[0])
		}
		// pgbench takes its turn among the modes' closed loops.
		for _, m := range append(order[:len(order):len(order)], pgbenchTurn) {
			if m == pgbenchTurn {
				r, err := b.pgbench(ctx)
				if err != nil {
					return res, err
				}
				res.limits.pgbench = append(res.limits.pgbench, r)
				continue
			}
			fmt.Fprintf(b.stderr, "rywbench:   round %d, %s: closed loop, %d connections, %s\n", round+1, m, b.o.conns, b.o.phase)
			p, err := b.peak(ctx, b.apis[m], b.o.phase)
			if err != nil {
				return res, err
			}
			res.byMode[m].peak = append(res.byMode[m].peak, p)
		}
		if res.rate == 0 {
			res.rate = max(1, int(res.byMode["off"].peak[0].rps()/2))
		}
		for _, m := range order {
			fmt.Fprintf(b.stderr, "rywbench:   round %d, %s: %d req/s for %s\n", round+1, m, res.rate, b.o.phase)
			p, err := b.attack(ctx, b.apis[m], res.rate, b.o.phase)
			if err != nil {
				return res, err
			}
			res.byMode[m].rate = append(res.byMode[m].rate, p)
		}
	}
	res.generator = b.generator
	if main {
		fmt.Fprintf(b.stderr, "rywbench:   generator check: GET /healthz at %d req/s for %s\n", res.rate, b.o.phase)
		if res.healthz, err = b.attackPath(ctx, b.apis["off"], "/healthz", res.rate, b.o.phase); err != nil {
			return res, err
		}
		for _, m := range b.labels {
			fmt.Fprintf(b.stderr, "rywbench:   %s: own-write workload, %d users for %s\n", m, b.o.users, b.o.phase)
			ow := b.o
			ow.duration = b.o.phase
			c0 := scrapeCounter(ctx, b.apis[m], replayChecksRE)
			r := measure(ctx, b.apis[m].URL, m, ow)
			r.replayChecks = scrapeCounter(ctx, b.apis[m], replayChecksRE) - c0
			res.own = append(res.own, r)
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
		}
		for _, m := range b.labels {
			tl, err := pauseTimeline(ctx, b.stack, b.apis[m], m, b.stderr)
			if err != nil {
				return res, err
			}
			res.timelines = append(res.timelines, tl)
		}
	}
	return res, nil
}

// userID is the i-th seeded user: md5(i) as a UUID, which PostgreSQL
// computes the same way (md5(i::text)::uuid), so that seeding is one
// statement.
func userID(i int) uuid.UUID { return uuid.UUID(md5.Sum([]byte(strconv.Itoa(i)))) }

// seed gives users 0..n-1 a profile and Redis marks as a write leaves them,
// and returns the Redis memory each user's marks take.
func (b *tpBench) seed(ctx context.Context, n int) (float64, error) {
	if n <= b.seeded {
		return 0, nil
	}
	fmt.Fprintf(b.stderr, "rywbench: seeding %d users (profiles and Redis marks)\n", n)
	err := b.stack.Primary.Exec(ctx, `
		INSERT INTO users (id, email, name)
		SELECT md5(i::text)::uuid, 'user' || i || '@example.com', 'User ' || i
		FROM generate_series($1::int, $2::int - 1) AS i
		ON CONFLICT (id) DO NOTHING`, b.seeded, n)
	if err != nil {
		return 0, fmt.Errorf("seed users: %w", err)
	}
	lsn, err := b.stack.Primary.CurrentLSN(ctx)
	if err != nil {
		return 0, err
	}
	db, err := sql.Open("pgx", b.stack.Primary.URL)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	opts, err := redis.ParseURL(b.stack.Redis.URL)
	if err != nil {
		return 0, err
	}
	rc := redis.NewClient(opts)
	defer rc.Close()
	tracker := ryw.NewRedisTracker(rc, ryw.TrackerConfig{TTL: b.o.markerTTL, WAL: ryw.PrimaryWAL{DB: db}, Timeout: 5 * time.Second, CacheUsers: -1})
	defer tracker.Close()
	// The first lookup creates the epoch, as the API's would.
	if _, err := tracker.Lookup(ctx, userID(0).String(), false); err != nil {
		return 0, fmt.Errorf("redis: %w", err)
	}
	// The marks carry the cluster and timeline, as the API's do.
	mark, _, err := ryw.PrimaryWAL{DB: db}.CurrentPosition(ctx)
	if err != nil {
		return 0, err
	}
	mark.LSN = lsn
	before, err := usedMemory(ctx, rc)
	if err != nil {
		return 0, err
	}
	work := make(chan int)
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for range 32 {
		wg.Go(func() {
			for i := range work {
				if _, err := tracker.Record(ctx, userID(i).String(), mark); err != nil {
					firstErr.CompareAndSwap(nil, err)
				}
			}
		})
	}
	for i := b.seeded; i < n; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, fmt.Errorf("record marks: %w", err)
	}
	after, err := usedMemory(ctx, rc)
	if err != nil {
		return 0, err
	}
	for i := b.seeded; i < n; i++ {
		b.headers = append(b.headers, http.Header{"X-Demo-Userid": {userID(i).String()}})
	}
	perUser := float64(after-before) / float64(n-b.seeded)
	b.seeded = n
	b.wrkFiles = "" // the user list changed
	return perUser, nil
}

func usedMemory(ctx context.Context, rc *redis.Client) (int64, error) {
	info, err := rc.Info(ctx, "memory").Result()
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, errors.New("redis INFO memory has no used_memory")
}

// idle measures what the API processes cost with no requests: the monitor
// polling every node.
func (b *tpBench) idle(ctx context.Context, l *limits) error {
	const window = 3 * time.Second
	var apiBefore []time.Duration
	for _, m := range b.labels {
		c, err := proccpu.Of(b.apis[m].Pid(), false)
		if err != nil {
			return err
		}
		apiBefore = append(apiBefore, c)
	}
	pgBefore, err := b.pgCPU()
	if err != nil {
		return err
	}
	redisBefore, err := proccpu.Of(b.stack.Redis.Pid(), false)
	if err != nil {
		return err
	}
	if err := waitUntil(ctx, time.Now().Add(window)); err != nil {
		return err
	}
	redisAfter, err := proccpu.Of(b.stack.Redis.Pid(), false)
	if err != nil {
		return err
	}
	l.idleRedis = (redisAfter - redisBefore) * time.Second / window
	var api time.Duration
	for i, m := range b.labels {
		c, err := proccpu.Of(b.apis[m].Pid(), false)
		if err != nil {
			return err
		}
		api += c - apiBefore[i]
	}
	pg, err := b.pgCPU()
	if err != nil {
		return err
	}
	n := len(b.labels)
	l.idleProcesses = n
	l.idleAPI = api / time.Duration(n) * time.Second / window
	l.idlePG = (pg - pgBefore) * time.Second / window
	l.idlePolls = float64(len(b.stack.Replicas)+1) * float64(time.Second) / float64(b.o.pollInterval)
	return nil
}

var (
	tpsRE  = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)
	rpsCSV = regexp.MustCompile(`^"GET","([0-9.]+)"`)
)

// pgbenchTurn is pgbench's place in a round's order.
const pgbenchTurn = "pgbench"

// pgbench runs pgbench -S -M prepared against the primary for one phase:
// 8 clients on the same primary, the limit that off mode is compared with.
func (b *tpBench) pgbench(ctx context.Context) (pgbenchRun, error) {
	p := b.stack.Primary
	fmt.Fprintf(b.stderr, "rywbench:   pgbench -S -M prepared, 8 clients, %s\n", b.o.phase)
	secs := max(1, int(b.o.phase.Seconds()))
	cmd := exec.CommandContext(ctx, p.Program("pgbench"), append(pgbenchConn(p), "-S", "-M", "prepared", "-n", "-c", "8", "-j", "2", "-T", strconv.Itoa(secs), "pgbench")...)
	before, err := b.pgCPU()
	if err != nil {
		return pgbenchRun{}, err
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return pgbenchRun{}, fmt.Errorf("pgbench -S: %v: %s", err, lastLine(out))
	}
	after, err := b.pgCPU()
	if err != nil {
		return pgbenchRun{}, err
	}
	m := tpsRE.FindSubmatch(out)
	if m == nil {
		return pgbenchRun{}, fmt.Errorf("pgbench printed no tps: %s", out)
	}
	var r pgbenchRun
	r.tps, _ = strconv.ParseFloat(string(m[1]), 64)
	if txs := time.Duration(r.tps * float64(secs)); txs > 0 {
		st := cmd.ProcessState
		r.cpu = cpuUse{pg: (after - before) / txs, gen: (st.UserTime() + st.SystemTime()) / txs}
	}
	return r, nil
}

// nodeLimits runs redis-benchmark GET against Redis.
func (b *tpBench) nodeLimits(ctx context.Context, l *limits) error {
	fmt.Fprintf(b.stderr, "rywbench:   redis-benchmark GET, 32 clients\n")
	rb, err := exec.LookPath("redis-benchmark")
	if err != nil {
		return fmt.Errorf("redis-benchmark is not on PATH (it comes with redis-server, or Debian's redis-tools): %w", err)
	}
	out, err := exec.CommandContext(ctx, rb, "-h", "127.0.0.1", "-p", strconv.Itoa(b.stack.Redis.Port),
		"-t", "get", "-c", "32", "-n", "300000", "-r", "100000", "--csv").CombinedOutput()
	if err != nil {
		return fmt.Errorf("redis-benchmark: %v: %s", err, lastLine(out))
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if m := rpsCSV.FindStringSubmatch(sc.Text()); m != nil {
			l.redisGetRPS, _ = strconv.ParseFloat(m[1], 64)
		}
	}
	if l.redisGetRPS == 0 {
		return fmt.Errorf("redis-benchmark printed no GET rate: %s", out)
	}
	return nil
}

func lastLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// pgCPU is the CPU time of every PostgreSQL process of the stack.
func (b *tpBench) pgCPU() (time.Duration, error) {
	var total time.Duration
	for _, n := range append([]*devstack.Node{b.stack.Primary}, b.stack.Replicas...) {
		c, err := proccpu.Of(n.Pid(), true)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", n.Name, err)
		}
		total += c
	}
	return total, nil
}

func (b *tpBench) cpu(api *devstack.API) (cpuUse, error) {
	var c cpuUse
	var err error
	if c.api, err = proccpu.Of(api.Pid(), false); err != nil {
		return c, fmt.Errorf("%s: %w", api.Name, err)
	}
	if c.pg, err = b.pgCPU(); err != nil {
		return c, err
	}
	if c.redis, err = proccpu.Of(b.stack.Redis.Pid(), false); err != nil {
		return c, fmt.Errorf("redis: %w", err)
	}
	if c.pooler, err = poolerCPU(b.stack); err != nil {
		return c, err
	}
	c.gen = proccpu.Self()
	return c, nil
}

// wrkScript makes wrk send GET /api/me for each user of a file in turn,
// the requests formatted once at start-up, so that wrk stays as cheap per
// request as pgbench's client.
const wrkScript = `
local reqs, n, i = {}, 0, 0
init = function(args)
  for id in io.lines(args[1]) do
    n = n + 1
    reqs[n] = wrk.format("GET", "/api/me", {["X-Demo-UserId"] = id})
  end
  i = math.random(n)
end
request = function()
  i = i % n + 1
  return reqs[i]
end
`

var (
	wrkRateRE = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkReqsRE = regexp.MustCompile(`([0-9]+) requests in ([0-9.]+)(ms|s|m)`)
	wrkBadRE  = regexp.MustCompile(`Non-2xx or 3xx responses: ([0-9]+)`)
	wrkErrRE  = regexp.MustCompile(`Socket errors: connect ([0-9]+), read ([0-9]+), write ([0-9]+), timeout ([0-9]+)`)
)

const wrkProgram = "wrk"

// haveWrk reports whether wrk is installed: peak then uses it.
func haveWrk() bool {
	_, err := exec.LookPath(wrkProgram)
	return err == nil
}

// peak measures the closed loop: with wrk (as pgbench, a C client that
// costs little per request) when it is installed, else with vegeta.
func (b *tpBench) peak(ctx context.Context, api *devstack.API, d time.Duration) (ph phase, err error) {
	wrk, lookErr := exec.LookPath(wrkProgram)
	if lookErr != nil {
		b.generator = "vegeta (wrk is not installed)"
		return b.attack(ctx, api, 0, d)
	}
	b.generator = "wrk"
	if err := b.wrkSetup(); err != nil {
		return phase{}, err
	}
	secs := max(1, int(d.Seconds()))
	l0, p0 := scrapeLookups(ctx, api)
	defer func() {
		l1, p1 := scrapeLookups(ctx, api)
		ph.lookups, ph.pipelines = l1-l0, p1-p0
	}()
	cmd := exec.CommandContext(ctx, wrk, "-t", "2", "-c", strconv.Itoa(b.o.conns), "-d", strconv.Itoa(secs)+"s",
		"-s", filepath.Join(b.wrkFiles, "me.lua"), api.URL, "--", filepath.Join(b.wrkFiles, "users.txt"))
	settle()
	before, err := b.cpu(api)
	if err != nil {
		return phase{}, err
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return phase{}, fmt.Errorf("wrk: %v: %s", err, out)
	}
	after, err := b.cpu(api)
	if err != nil {
		return phase{}, err
	}
	var p phase
	var bad uint64
	if p.requests, p.secs, bad, err = parseWrk(out); err != nil {
		return phase{}, err
	}
	p.bad = int(bad)
	if m := wrkErrRE.FindSubmatch(out); m != nil {
		for _, g := range m[1:] {
			n, _ := strconv.Atoi(string(g))
			p.bad += n
		}
	}
	p.cpu = after.sub(before)
	st := cmd.ProcessState
	p.cpu.gen = st.UserTime() + st.SystemTime()
	p.replica = noShare // wrk does not read the answers' headers
	if p.requests == 0 {
		return p, fmt.Errorf("%s answered no request: %s", api.Name, out)
	}
	ph = p
	return ph, nil
}

// scrapeCounter reads one series from the API's /metrics (0 if absent).
func scrapeCounter(ctx context.Context, api *devstack.API, re *regexp.Regexp) float64 {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, api.URL+"/metrics", nil)
	if err != nil {
		return 0
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if m := re.FindSubmatch(body); m != nil {
		v, _ := strconv.ParseFloat(string(m[1]), 64)
		return v
	}
	return 0
}

var (
	replayChecksRE = regexp.MustCompile(`(?m)^ryw_replay_checks_total ([0-9.e+]+)$`)
	lookupsRE      = regexp.MustCompile(`(?m)^ryw_redis_duration_seconds_count\{op="lookup"\} ([0-9.e+]+)$`)
	pipelinesRE    = regexp.MustCompile(`(?m)^ryw_redis_lookup_pipelines_total ([0-9.e+]+)$`)
)

// scrapeLookups reads the tracker's lookups and lookup pipelines so far from
// the API's /metrics (0, 0 if it has none: off mode, or an older build).
func scrapeLookups(ctx context.Context, api *devstack.API) (lookups, pipelines float64) {
	return scrapeCounter(ctx, api, lookupsRE), scrapeCounter(ctx, api, pipelinesRE)
}

// noShare marks a phase whose generator did not look at X-Served-By.
const noShare = ^uint64(0)

// attack sends GET /api/me for the seeded users in turn: rate 0 is a
// closed loop over -conns connections, otherwise a constant rate over four
// times as many.
func (b *tpBench) attack(ctx context.Context, api *devstack.API, rate int, d time.Duration) (phase, error) {
	return b.attackPath(ctx, api, "/api/me", rate, d)
}

// attackPath is attack on another path: /healthz, which touches no node,
// tells what the generator and the HTTP stack alone add to latency.
func (b *tpBench) attackPath(ctx context.Context, api *devstack.API, path string, rate int, d time.Duration) (phase, error) {
	url := api.URL + path
	var next atomic.Uint64
	targeter := func(t *vegeta.Target) error {
		i := next.Add(1)
		t.Method = http.MethodGet
		t.URL = url
		t.Header = b.headers[i%uint64(len(b.headers))]
		return nil
	}
	conns := b.o.conns
	opts := []func(*vegeta.Attacker){
		vegeta.KeepAlive(true), vegeta.Timeout(10 * time.Second), vegeta.MaxBody(0),
	}
	pacer := vegeta.Rate{Freq: rate, Per: time.Second}
	if rate != 0 {
		// Enough workers and connections that a burst of slow answers does
		// not hold back the schedule, bounded so that vegeta never opens
		// thousands of them when the API falls behind (which would measure
		// the generator): if it did fall behind, the achieved rate shows it.
		conns *= 4
	}
	opts = append(opts, vegeta.Workers(uint64(conns)), vegeta.MaxWorkers(uint64(conns)),
		vegeta.Connections(conns), vegeta.MaxConnections(conns))
	atk := vegeta.NewAttacker(opts...)
	stop := context.AfterFunc(ctx, func() { atk.Stop() })
	defer stop()

	settle()
	before, err := b.cpu(api)
	if err != nil {
		return phase{}, err
	}
	var m vegeta.Metrics
	var p phase
	start := time.Now()
	for r := range atk.Attack(targeter, pacer, d, "") {
		m.Add(r)
		if r.Code != http.StatusOK {
			p.bad++
		} else if strings.HasPrefix(r.Headers.Get("X-Served-By"), "replica") {
			p.replica++
		}
	}
	p.secs = time.Since(start).Seconds()
	after, err := b.cpu(api)
	if err != nil {
		return phase{}, err
	}
	m.Close()
	if ctx.Err() != nil {
		return phase{}, ctx.Err()
	}
	p.requests = m.Requests
	p.p50, p.p99 = m.Latencies.P50, m.Latencies.P99
	p.cpu = after.sub(before)
	if p.requests == 0 {
		return p, fmt.Errorf("%s answered no request", api.Name)
	}
	return p, nil
}

// settle collects this process's garbage (a constant-rate phase leaves
// plenty) before a phase starts, so that the collector does not run in the
// middle of the next one and take CPU from the processes measured.
func settle() {
	runtime.GC()
	debug.FreeOSMemory()
}

func waitUntil(ctx context.Context, t time.Time) error {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func humanCount(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return strconv.Itoa(n)
}

func each[S, T any](ps []S, f func(S) T) []T {
	out := make([]T, len(ps))
	for i, p := range ps {
		out[i] = f(p)
	}
	return out
}

func us(d time.Duration) string { return fmt.Sprintf("%.0f", float64(d.Nanoseconds())/1000) }

// summary is one mode's medians over the rounds of one config.
type summary struct {
	peak, peakRatio         float64
	p50, p99, p99Ratio      float64 // ms, and the p99 against off's
	rateAchieved            float64
	api, pg, redis, gen     time.Duration // CPU per request at the peak
	pooler                  time.Duration // every pgbouncer's, likewise
	replicaShare            float64
	bad                     int
	genCoreShare            float64 // the generator's share of one core at the constant rate
	perPipeline             float64 // tracker lookups per Redis pipeline at the peak (0: none)
	roundsPeak, roundsRatio []float64
}

func summarize(c configResult, mode string) summary {
	mr, off := c.byMode[mode], c.byMode["off"]
	var s summary
	s.roundsPeak = each(mr.peak, phase.rps)
	s.peak = loadgen.Median(s.roundsPeak)
	for i, p := range mr.peak {
		s.roundsRatio = append(s.roundsRatio, p.rps()/off.peak[i].rps())
		s.bad += p.bad
	}
	s.peakRatio = loadgen.Median(s.roundsRatio)
	s.p50 = loadgen.Median(each(mr.rate, func(p phase) float64 { return float64(p.p50.Microseconds()) / 1000 }))
	s.p99 = loadgen.Median(each(mr.rate, func(p phase) float64 { return float64(p.p99.Microseconds()) / 1000 }))
	var ratios []float64
	for i, p := range mr.rate {
		ratios = append(ratios, float64(p.p99)/float64(off.rate[i].p99))
		s.bad += p.bad
	}
	s.p99Ratio = loadgen.Median(ratios)
	s.rateAchieved = loadgen.Median(each(mr.rate, phase.rps))
	s.genCoreShare = loadgen.Median(each(mr.rate, func(p phase) float64 { return p.cpu.gen.Seconds() / p.secs }))
	dur := func(f func(phase) time.Duration) time.Duration {
		return time.Duration(loadgen.Median(each(mr.peak, func(p phase) float64 { return float64(f(p)) })))
	}
	s.api = dur(func(p phase) time.Duration { return p.perRequest(p.cpu.api) })
	s.pg = dur(func(p phase) time.Duration { return p.perRequest(p.cpu.pg) })
	s.redis = dur(func(p phase) time.Duration { return p.perRequest(p.cpu.redis) })
	s.gen = dur(func(p phase) time.Duration { return p.perRequest(p.cpu.gen) })
	s.pooler = dur(func(p phase) time.Duration { return p.perRequest(p.cpu.pooler) })
	var lookups, pipelines float64
	for _, p := range mr.peak {
		lookups += p.lookups
		pipelines += p.pipelines
	}
	if pipelines > 0 {
		s.perPipeline = lookups / pipelines
	}
	var served, total uint64
	for _, p := range append(slices.Clone(mr.peak), mr.rate...) {
		if p.replica != noShare {
			served += p.replica
			total += p.requests
		}
	}
	if total > 0 {
		s.replicaShare = 100 * float64(served) / float64(total)
	}
	return s
}

// renderThroughput writes the report as Markdown.
func renderThroughput(results []configResult, o options, commit string) string {
	var b bytes.Buffer
	main := results[0]
	fmt.Fprintf(&b, "Measured on commit `%s`, %s, with `make bench%s`.\n\n", commit, time.Now().UTC().Format("2006-01-02"), argsNote(o))
	fmt.Fprintf(&b, "Workload: GET /api/me for %s users who saved their profile long before (past the %s window, marks in Redis), "+
		"in turn; %d connections in a closed loop (%s) for the peak, then a constant rate of half the off-mode peak (vegeta), %s each, "+
		"%d rounds, the modes' order rotating. %s\n\n",
		humanCount(main.cfg.population), o.window, o.conns, main.generator, o.phase, main.cfg.rounds, processesNote(main, o))

	fmt.Fprintf(&b, "### %s\n\n", main.cfg)
	// PgBouncer's column, with -pooler: every pgbouncer's CPU, whichever
	// API process the phase was for (so about 0 for the direct ones).
	poolerHead, poolerRule := "", ""
	poolerCol := func(summary) string { return "" }
	if o.pooler != "" {
		poolerHead, poolerRule = " PgBouncer µs/req\t", "---\t"
		poolerCol = func(s summary) string { return " " + us(s.pooler) + "\t" }
	}
	w := tabwriter.NewWriter(&b, 0, 0, 1, ' ', tabwriter.Debug)
	fmt.Fprintln(w, "| mode\t peak req/s\t vs off\t rounds (vs off)\t p50 at rate\t p99 at rate\t p99 vs off\t served by replicas\t API µs/req\t PostgreSQL µs/req\t Redis µs/req\t"+poolerHead+" generator µs/req\t lookups per Redis pipeline\t non-200\t")
	fmt.Fprintln(w, "|---\t---\t---\t---\t---\t---\t---\t---\t---\t---\t---\t"+poolerRule+"---\t---\t---\t")
	for _, m := range main.modes {
		s := summarize(main, m)
		var rounds []string
		for _, r := range s.roundsRatio {
			rounds = append(rounds, fmt.Sprintf("%.2f", r))
		}
		perPipeline := "-"
		if s.perPipeline > 0 {
			perPipeline = fmt.Sprintf("%.1f", s.perPipeline)
		}
		fmt.Fprintf(w, "| %s\t %.0f\t %.2fx\t %s\t %.2f ms\t %.2f ms\t %.2fx\t %.1f%%\t %s\t %s\t %s\t%s %s\t %s\t %d\t\n",
			m, s.peak, s.peakRatio, strings.Join(rounds, " "), s.p50, s.p99, s.p99Ratio, s.replicaShare,
			us(s.api), us(s.pg), us(s.redis), poolerCol(s), us(s.gen), perPipeline, s.bad)
	}
	w.Flush()
	l := main.limits
	off := summarize(main, "off")
	fmt.Fprintf(&b, "\nThe constant rate was %d req/s; ", main.rate)
	var worstRate, worstGen float64 = 1e18, 0
	for _, m := range main.modes {
		s := summarize(main, m)
		worstRate = min(worstRate, s.rateAchieved)
		worstGen = max(worstGen, s.genCoreShare)
	}
	fmt.Fprintf(&b, "every mode got at least %.0f req/s of it, and the generator used at most %.0f%% of one core doing it. ", worstRate, 100*worstGen)
	if h := main.healthz; h.requests > 0 {
		fmt.Fprintf(&b, "GET /healthz (no node involved) at the same rate from the same generator: p50 %s, p99 %s, %.0f req/s.",
			ms(h.p50), ms(h.p99), h.rps())
	}
	fmt.Fprintf(&b, "\n\n")
	fmt.Fprintf(&b, "What the nodes do on their own, same run:\n\n")
	w = tabwriter.NewWriter(&b, 0, 0, 1, ' ', tabwriter.Debug)
	fmt.Fprintln(w, "| limit\t rate\t off-mode GET /api/me against it\t")
	fmt.Fprintln(w, "|---\t---\t---\t")
	fmt.Fprintf(w, "| `pgbench -S -M prepared`, 8 clients, primary, a turn in every round\t %.0f tps (PostgreSQL %s µs, pgbench %s µs CPU per transaction)\t %.3fx (rounds: %s)\t\n",
		l.pgbenchTPS(), us(l.pgbenchCPU().pg), us(l.pgbenchCPU().gen), offVsPgbench(main), roundRatios(main))
	fmt.Fprintf(w, "| `redis-benchmark -t get`, 32 clients\t %.0f GET/s\t %.3fx\t\n", l.redisGetRPS, off.peak/l.redisGetRPS)
	w.Flush()

	fmt.Fprintf(&b, "\nThe issue's targets, from this run")
	if o.pooler != "" {
		fmt.Fprintf(&b, " (throughput and latency on direct connections, as the targets were set; own writes both ways)")
	}
	fmt.Fprintf(&b, ":\n\n")
	for _, m := range main.modes {
		if m == "off" || pooled(m) || baseline(m) {
			continue
		}
		s := summarize(main, m)
		fmt.Fprintf(&b, "- %s mode throughput is %.2fx off (target at least 0.90x): %s\n", m, s.peakRatio, verdict(s.peakRatio >= 0.90))
	}
	fmt.Fprintf(&b, "- off mode is %.3fx `pgbench -S -M prepared` (target at least 0.20x): %s\n", offVsPgbench(main), verdict(offVsPgbench(main) >= 0.20))
	if slices.Contains(main.modes, "lsn") {
		s := summarize(main, "lsn")
		fmt.Fprintf(&b, "- lsn mode p99 at half the peak is %.2fx off's (target at most 2x): %s\n", s.p99Ratio, verdict(s.p99Ratio <= 2))
	}
	for _, r := range main.own {
		if modeOf(r.mode) == "lsn" {
			fmt.Fprintf(&b, "- %s mode serves %.1f%% of own-write reads from replicas (target at least 95%%), with %d violations: %s\n",
				r.mode, share(r), r.violations, verdict(share(r) >= 95 && r.violations == 0))
		}
	}

	if o.baselineBin != "" {
		fmt.Fprintf(&b, "\nThis build against the baseline build (`%s`), mode by mode, same run (medians of the rounds):\n\n", filepath.Base(o.baselineBin))
		w = tabwriter.NewWriter(&b, 0, 0, 1, ' ', tabwriter.Debug)
		fmt.Fprintln(w, "| mode\t peak req/s, this build\t peak req/s, baseline\t this vs baseline\t CPU µs/req (API+PostgreSQL+Redis), this\t same, baseline\t")
		fmt.Fprintln(w, "|---\t---\t---\t---\t---\t---\t")
		for _, m := range main.modes {
			if pooled(m) || baseline(m) {
				continue
			}
			s, base := summarize(main, m), summarize(main, m+baselineSuffix)
			fmt.Fprintf(w, "| %s\t %.0f\t %.0f\t %.3fx\t %s\t %s\t\n", m, s.peak, base.peak, baselineRatio(main, m),
				us(s.api+s.pg+s.redis), us(base.api+base.pg+base.redis))
		}
		w.Flush()
	}

	if len(main.own) > 0 {
		fmt.Fprintf(&b, "\nOwn-write workload (%d users each saving their profile, then reading it back within 0-%s), %s per mode:\n\n",
			o.users, o.readAfter, o.phase)
		w = tabwriter.NewWriter(&b, 0, 0, 1, ' ', tabwriter.Debug)
		fmt.Fprintln(w, "| mode\t own-write reads\t served by replicas\t replay checks per read\t violations\t errors\t read p50\t read p99\t write p50\t write p99\t")
		fmt.Fprintln(w, "|---\t---\t---\t---\t---\t---\t---\t---\t---\t---\t")
		for _, r := range main.own {
			fmt.Fprintf(w, "| %s\t %d\t %.1f%%\t %.2f\t %d\t %d\t %s\t %s\t %s\t %s\t\n", r.mode, r.reads, share(r),
				r.replayChecks/float64(max(r.reads, 1)), r.violations, r.errors,
				ms(percentile(r.readLatency, .5)), ms(percentile(r.readLatency, .99)),
				ms(percentile(r.writeLatency, .5)), ms(percentile(r.writeLatency, .99)))
		}
		w.Flush()
	}
	if len(main.timelines) > 0 {
		tl0 := main.timelines[0]
		fmt.Fprintf(&b, "\nPause timeline (one user saving every %s and reading back continuously for %s, %s's replay paused from %s to %s; docs/bench-pause-timeline.png):\n\n",
			writeEvery, timelineLength, tl0.paused, pauseAt, resumeAt)
		w := tabwriter.NewWriter(&b, 0, 0, 1, ' ', tabwriter.Debug)
		fmt.Fprintln(w, "| mode\t reads\t served by replicas\t stale\t")
		fmt.Fprintln(w, "|---\t---\t---\t---\t")
		for _, tl := range main.timelines {
			fmt.Fprintf(w, "| %s\t %d\t %d\t %d\t\n", tl.mode, len(tl.reads), tl.replica, tl.stale)
		}
		w.Flush()
	}

	fmt.Fprintf(&b, "\n### How cost grows\n\n")
	fmt.Fprintf(&b, "One round per shape after the first (so noisier); peak and CPU per request in the closed loop, latency at half the shape's own off-mode peak.\n\n")
	w = tabwriter.NewWriter(&b, 0, 0, 1, ' ', tabwriter.Debug)
	fmt.Fprintln(w, "| shape\t mode\t peak req/s\t vs off\t p99 at rate\t p99 vs off\t API µs/req\t PostgreSQL µs/req\t Redis µs/req\t"+poolerHead)
	fmt.Fprintln(w, "|---\t---\t---\t---\t---\t---\t---\t---\t---\t"+poolerRule)
	for _, c := range results {
		for _, m := range c.modes {
			s := summarize(c, m)
			fmt.Fprintf(w, "| %s\t %s\t %.0f\t %.2fx\t %.2f ms\t %.2fx\t %s\t %s\t %s\t%s\n", c.cfg, m, s.peak, s.peakRatio, s.p99, s.p99Ratio, us(s.api), us(s.pg), us(s.redis), poolerCol(s))
		}
	}
	w.Flush()
	fmt.Fprintf(&b, "\nStanding costs, per shape:\n\n")
	w = tabwriter.NewWriter(&b, 0, 0, 1, ' ', tabwriter.Debug)
	fmt.Fprintln(w, "| shape\t monitor polls/s per API process\t idle API process CPU\t PostgreSQL CPU for the polls\t per poll\t idle Redis CPU\t Redis memory per user\t")
	fmt.Fprintln(w, "|---\t---\t---\t---\t---\t---\t---\t")
	for _, c := range results {
		l := c.limits
		perPoll := time.Duration(0)
		if l.idlePolls > 0 {
			perPoll = time.Duration(float64(l.idlePG) / (l.idlePolls * float64(l.idleProcesses)))
		}
		mem := "(same users)"
		if l.redisMemUser > 0 {
			mem = fmt.Sprintf("%.0f bytes", l.redisMemUser)
		}
		fmt.Fprintf(w, "| %s\t %.0f\t %.1f ms/s\t %.1f ms/s (%d processes)\t %s µs\t %.1f ms/s\t %s\t\n", c.cfg, l.idlePolls,
			float64(l.idleAPI.Microseconds())/1000, float64(l.idlePG.Microseconds())/1000, l.idleProcesses, us(perPoll),
			float64(l.idleRedis.Microseconds())/1000, mem)
	}
	w.Flush()
	return b.String()
}

// processesNote says which API processes ran and how they reach the nodes.
func processesNote(c configResult, o options) string {
	if o.pooler == "" {
		return "One API process per mode, all running, taking turns."
	}
	version := c.poolerVersion
	if version == "" {
		version = "PgBouncer"
	}
	return fmt.Sprintf("Two API processes per mode, all running, taking turns: one connecting to the nodes directly (DATABASE_POOLER=none), "+
		"and one, labelled `<mode>%s`, through a %s in front of every node in %s pooling (pool_mode = %s, default_pool_size = %d, "+
		"DATABASE_POOLER=%s); every ratio is against off mode, direct. PgBouncer µs/req is every pgbouncer's CPU in the phase, "+
		"whichever process it served: in the direct rows, the idle pooled processes' monitor polls. pgbench connects to the primary directly.",
		pooledSuffix, version, o.pooler, o.pooler, poolSize(o.pooler), o.pooler) + sessionNote(c, o)
}

// sessionNote warns, in session pooling, when the pooled processes may hold
// more client connections to a node than its pgbouncer has server
// connections: each holds one for as long as it stays open (idle ones
// included), so the others wait for one, and the +pgbouncer rows measure
// that wait as much as the pooler.
func sessionNote(c configResult, o options) string {
	if o.pooler != devstack.PoolSession {
		return ""
	}
	n := 0
	for _, m := range c.modes {
		if pooled(m) {
			n++
		}
	}
	perProcess := ryw.DefaultMaxConns + 1 // the application's pool and the monitor's
	if n*perProcess <= poolSize(o.pooler) {
		return ""
	}
	return fmt.Sprintf(" In session pooling a client connection holds a server connection until it closes: the %d pooled processes "+
		"may open up to %d connections to each node (%d each: ryw's default MaxConns and the monitor's one), against %d server connections, "+
		"so their requests can wait for one; the %s rows include that wait.", n, n*perProcess, perProcess, poolSize(o.pooler), pooledSuffix)
}

// poolSize is devstack's default_pool_size in the pool mode.
func poolSize(mode string) int {
	if mode == devstack.PoolSession {
		return devstack.SessionPoolSize
	}
	return devstack.PoolSize
}

func verdict(ok bool) string {
	if ok {
		return "**met**"
	}
	return "**not met**"
}

func argsNote(o options) string {
	if o.args == "" {
		return ""
	}
	return fmt.Sprintf(` ARGS="%s"`, o.args)
}

// baselineRatio is the median over the rounds of mode's peak over its
// baseline twin's peak in the same round.
func baselineRatio(c configResult, mode string) float64 {
	this, base := c.byMode[mode], c.byMode[mode+baselineSuffix]
	var ratios []float64
	for i, p := range this.peak {
		if i < len(base.peak) {
			ratios = append(ratios, p.rps()/base.peak[i].rps())
		}
	}
	return loadgen.Median(ratios)
}

// parseWrk reads wrk's summary: the requests it completed, in how many
// seconds, and how many of them answered other than 2xx or 3xx.
func parseWrk(out []byte) (requests uint64, secs float64, non2xx uint64, err error) {
	m := wrkReqsRE.FindSubmatch(out)
	if m == nil {
		return 0, 0, 0, fmt.Errorf("wrk printed no request count: %s", out)
	}
	requests, _ = strconv.ParseUint(string(m[1]), 10, 64)
	secs, _ = strconv.ParseFloat(string(m[2]), 64)
	switch string(m[3]) {
	case "ms":
		secs /= 1000
	case "m":
		secs *= 60
	}
	if m := wrkBadRE.FindSubmatch(out); m != nil {
		non2xx, _ = strconv.ParseUint(string(m[1]), 10, 64)
	}
	return requests, secs, non2xx, nil
}

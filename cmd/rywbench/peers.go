package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"

	"github.com/ryw-go/ryw/internal/devstack"
	"github.com/ryw-go/ryw/internal/loadgen"
)

// The peers suite (-suite peers) sets ryw beside what else routes reads to
// streaming replicas, on one cluster whose last replica lags by
// -replica-delay: ryw in lsn, time and off mode; the API with no replicas
// (every read on the primary); and pgpool-II in streaming-replication
// load-balancing mode in front of the same nodes, the API in off mode
// seeing it as its only database, in each of pgpool's
// disable_load_balance_on_write settings, once with the API's settings for
// direct connections (pgx's named prepared statements) and once with its
// settings for a pooler (unnamed statements).
//
// The configurations take turns, in an order rotated each round. In its
// turn a configuration's API process starts, takes a second of warm-up
// load, the closed-loop peak of GET /api/me (as the throughput suite
// measures it), then the own-write workload with sessions (sessionUser),
// and stops: one API process at a time, so that idle ones hold no
// pgpool child and no node connection.

// peer is one configuration of the peers suite.
type peer struct {
	label string
	// env is the API's environment on top of the stack's.
	env []string
	// pgpool is the disable_load_balance_on_write of the pgpool the API
	// goes through, or "" when it reaches the nodes directly.
	pgpool string
	// named says, behind pgpool, that the API uses its settings for
	// direct connections (DATABASE_POOLER=none: pgx's named prepared
	// statements) rather than those for a pooler.
	named bool
}

// pgpoolModes are the disable_load_balance_on_write settings measured.
var pgpoolModes = []string{"transaction", "always", "dml_adaptive"}

// peerOff is the label of the baseline, ryw in off mode.
const peerOff = "ryw off"

// peerList is the suite's configurations, in the order of the first round.
func peerList() []peer {
	ps := []peer{
		{label: "ryw lsn", env: []string{"RYW_MODE=lsn"}},
		{label: "ryw time", env: []string{"RYW_MODE=time"}},
		{label: peerOff, env: []string{"RYW_MODE=off"}},
		// No replicas: everything goes to the primary, and the mode has
		// nothing to route (off: no Redis either).
		{label: "every read on the primary", env: []string{"RYW_MODE=off", "DATABASE_REPLICA_URLS="}},
	}
	for _, m := range pgpoolModes {
		for _, named := range []bool{true, false} {
			ps = append(ps, peer{label: pgpoolLabel(m, named), pgpool: m, named: named})
		}
	}
	return ps
}

func pgpoolLabel(mode string, named bool) string {
	if named {
		return "pgpool " + mode + ", named statements"
	}
	return "pgpool " + mode + ", unnamed statements"
}

// pgpoolEnv is the API's environment behind a pgpool: off mode, pgpool as
// the only database, migrations (already applied) straight to the
// primary. DATABASE_POOLER=none is the API's setting for direct
// connections, with pgx's default named prepared statements; session is
// one for a pooler (pgpool holds a child per client connection, as a
// session pooler does), with which ryw sends every statement unnamed
// (pgx's QueryExecModeExec).
func pgpoolEnv(pgpoolURL, primaryURL string, named bool) []string {
	pooler := "session"
	if named {
		pooler = "none"
	}
	return []string{
		"RYW_MODE=off", "DATABASE_URL=" + pgpoolURL, "DATABASE_REPLICA_URLS=",
		"DATABASE_POOLER=" + pooler, "DATABASE_MIGRATION_URL=" + primaryURL,
	}
}

// peerTurn is one configuration's turn in one round.
type peerTurn struct {
	started  bool
	attempts int    // API starts tried
	startErr string // why the last start failed
	peak     phase
	peakErr  string // why there is no peak
	// peakShare and ownShare are the share (0..100) of reads that replicas
	// served in the peak and in the own-write workload; -1: unknown.
	peakShare, ownShare float64
	own                 result
}

// peerResult is one configuration's turns.
type peerResult struct {
	peer
	turns []peerTurn
	// causes are the API's logged request errors, by cause.
	causes map[string]int
}

// peersReport is everything the report needs.
type peersReport struct {
	results  []*peerResult
	version  string      // pgpool --version
	settings [][2]string // pgpool.conf's settings (disable_load_balance_on_write varies)
	rounds   int
}

// startAttempts bounds how often a configuration's API start is tried in a
// turn: behind pgpool with the settings for direct connections, ryw's
// check that a connection is direct passes or fails by which node pgpool
// balances the check's SELECT to, so a start may fail and the next pass.
const startAttempts = 5

func runPeers(ctx context.Context, o options, stderr io.Writer) (peersReport, error) {
	rep := peersReport{rounds: o.rounds}
	var err error
	if rep.version, err = devstack.PgPoolVersion(ctx); err != nil {
		return rep, fmt.Errorf("the peers suite runs pgpool-II: %w (make bench installs it for -suite peers)", err)
	}
	fmt.Fprintf(stderr, "rywbench: starting a primary, %d replicas (the last %s behind), Redis, and %s in front of them, once per disable_load_balance_on_write (%s)\n",
		o.replicas, o.replicaDelay, rep.version, strings.Join(pgpoolModes, ", "))
	stack, err := devstack.Start(ctx, devstack.Options{Replicas: o.replicas, ReplicaDelay: o.replicaDelay, Migrate: true})
	if err != nil {
		return rep, err
	}
	defer stack.Close()
	pools := map[string]*devstack.PgPool{}
	for _, m := range pgpoolModes {
		p, err := stack.StartPgPool(ctx, devstack.PgPoolOptions{LoadBalanceOnWrite: m})
		if err != nil {
			return rep, err
		}
		pools[m] = p
		rep.settings = p.Settings()
	}
	b := &tpBench{o: o, stack: stack, stderr: stderr, apis: map[string]*devstack.API{}}
	if _, err := b.seed(ctx, o.population); err != nil {
		return rep, err
	}
	seededAt := time.Now()
	for _, sql := range []string{"VACUUM (FREEZE, ANALYZE) users", "CHECKPOINT"} {
		if err := stack.Primary.Exec(ctx, sql); err != nil {
			return rep, fmt.Errorf("%s: %w", sql, err)
		}
	}
	if err := stack.WaitCaughtUp(ctx, stack.Replicas...); err != nil {
		return rep, err
	}
	// The seeded writes must be past the read-your-writes window, as in
	// the throughput suite.
	if err := waitUntil(ctx, seededAt.Add(o.window+time.Second)); err != nil {
		return rep, err
	}
	for _, p := range peerList() {
		rep.results = append(rep.results, &peerResult{peer: p, causes: map[string]int{}})
	}
	for round := range o.rounds {
		order := slices.Clone(rep.results)
		for range round {
			order = append(order[1:], order[0])
		}
		for _, r := range order {
			fmt.Fprintf(stderr, "rywbench:   round %d, %s\n", round+1, r.label)
			turn, err := b.peerTurn(ctx, r, pools[r.pgpool], round)
			if err != nil {
				return rep, err
			}
			r.turns = append(r.turns, turn)
		}
	}
	return rep, nil
}

// peerTurn runs one configuration's turn. Only the run's own failures (a
// cancelled context, a stack that broke) are errors: a configuration
// that fails is measured failing.
func (b *tpBench) peerTurn(ctx context.Context, r *peerResult, pool *devstack.PgPool, round int) (peerTurn, error) {
	turn := peerTurn{peakShare: -1, ownShare: -1}
	env := slices.Clone(r.env)
	if pool != nil {
		env = pgpoolEnv(pool.URL(), b.stack.Primary.URL, r.named)
	}
	env = append(env, "PPROF_ADDR=", "LOG_LEVEL=warn")
	logDir := filepath.Join(b.stack.Dir, fmt.Sprintf("api-%s-%d", strings.NewReplacer(" ", "-", ",", "").Replace(r.label), round+1))
	if err := os.Mkdir(logDir, 0o755); err != nil {
		return turn, err
	}
	var api *devstack.API
	for turn.attempts < startAttempts && api == nil {
		turn.attempts++
		apis, err := b.stack.StartAPI(ctx, devstack.APIOptions{Binary: b.o.apiBin, Env: env, LogDir: logDir})
		if ctx.Err() != nil {
			return turn, ctx.Err()
		}
		if err != nil {
			turn.startErr = startFailure(err)
			fmt.Fprintf(b.stderr, "rywbench:     the API did not start (attempt %d): %s\n", turn.attempts, turn.startErr)
			continue
		}
		api = apis[0]
	}
	if api == nil {
		return turn, nil
	}
	turn.started = true
	defer func() {
		if logs, err := os.ReadFile(filepath.Join(logDir, api.Name+".log")); err == nil {
			for cause, n := range errorCauses(string(logs)) {
				r.causes[cause] += n
			}
		}
	}()
	defer api.Stop(context.WithoutCancel(ctx)) //nolint:errcheck // the stack stops it at the latest

	// Warm the API's pools (and pgpool's children) before measuring.
	_, _ = b.attack(ctx, api, 0, time.Second)
	nodes0, decisions0 := b.readCounters(ctx, api, pool)
	p, err := b.peak(ctx, api, b.o.phase)
	if ctx.Err() != nil {
		return turn, ctx.Err()
	}
	if err != nil {
		turn.peakErr = err.Error()
	} else {
		turn.peak = p
		nodes1, decisions1 := b.readCounters(ctx, api, pool)
		turn.peakShare = counterShare(pool, nodes0, nodes1, decisions0, decisions1)
	}

	fmt.Fprintf(b.stderr, "rywbench:     own-write workload with sessions, %d users for %s\n", b.o.users, b.o.duration)
	nodes0, _ = b.readCounters(ctx, api, pool)
	turn.own = measureWith(ctx, api.URL, r.label, b.o, sessionUser)
	if ctx.Err() != nil {
		return turn, ctx.Err()
	}
	if pool == nil {
		turn.ownShare = share(turn.own)
	} else {
		nodes1, _ := b.readCounters(ctx, api, pool)
		turn.ownShare = counterShare(pool, nodes0, nodes1, nil, nil)
	}
	return turn, nil
}

// readCounters reads where reads went so far: pgpool's SHOW POOL_NODES
// behind pgpool, else the API's routing decisions from its /metrics.
func (b *tpBench) readCounters(ctx context.Context, api *devstack.API, pool *devstack.PgPool) ([]devstack.PoolNode, map[string]float64) {
	if pool != nil {
		nodes, err := pool.Nodes(ctx)
		if err != nil {
			fmt.Fprintf(b.stderr, "rywbench:     SHOW POOL_NODES: %v\n", err)
			return nil, nil
		}
		return nodes, nil
	}
	return nil, scrapeDecisions(ctx, api)
}

// counterShare is the share of reads replicas served between two
// readings: of the SELECTs pgpool sent to each node (select_cnt), or of the
// API's read decisions (ryw_routing_decisions_total, writes left out); -1
// when unknown.
func counterShare(pool *devstack.PgPool, n0, n1 []devstack.PoolNode, d0, d1 map[string]float64) float64 {
	if pool != nil {
		return selectShare(n0, n1)
	}
	return decisionShare(d0, d1)
}

// selectShare is the standbys' share of the SELECTs pgpool routed between
// two SHOW POOL_NODES, or -1 when unknown.
func selectShare(before, after []devstack.PoolNode) float64 {
	if len(before) == 0 || len(before) != len(after) {
		return -1
	}
	var replica, all int64
	for i, n := range after {
		d := n.Selects - before[i].Selects
		all += d
		if n.Role != "primary" {
			replica += d
		}
	}
	if all <= 0 {
		return -1
	}
	return 100 * float64(replica) / float64(all)
}

var decisionRE = regexp.MustCompile(`(?m)^ryw_routing_decisions_total\{node="([^"]*)",reason="([^"]*)"\} ([0-9.e+]+)$`)

// scrapeDecisions reads ryw_routing_decisions_total from the API's
// /metrics, by "node reason" (nil when unreadable).
func scrapeDecisions(ctx context.Context, api *devstack.API) map[string]float64 {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, api.URL+"/metrics", nil)
	if err != nil {
		return nil
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil
	}
	return parseDecisions(string(body))
}

func parseDecisions(metrics string) map[string]float64 {
	out := map[string]float64{}
	for _, m := range decisionRE.FindAllStringSubmatch(metrics, -1) {
		v, _ := strconv.ParseFloat(m[3], 64)
		out[m[1]+" "+m[2]] = v
	}
	return out
}

// decisionShare is the replicas' share of the read decisions between two
// scrapes (a read retried on the primary counts twice, once each), or -1
// when unknown.
func decisionShare(before, after map[string]float64) float64 {
	if before == nil || after == nil {
		return -1
	}
	var replica, all float64
	for k, v := range after {
		node, reason, _ := strings.Cut(k, " ")
		if reason == "write" {
			continue
		}
		d := v - before[k]
		all += d
		if node != "primary" {
			replica += d
		}
	}
	if all <= 0 {
		return -1
	}
	return 100 * replica / all
}

// startFailure is the line of an API start error that says why: the
// API's own last words when its log holds them.
func startFailure(err error) string {
	lines := strings.Split(strings.TrimSpace(err.Error()), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); strings.HasPrefix(l, "ryw api:") {
			return l
		}
	}
	return lines[len(lines)-1]
}

var requestErrRE = regexp.MustCompile(`msg="request failed" err="((?:[^"\\]|\\.)*)"`)

// errorCauses counts the API's logged request errors by cause: the error
// text without the operation's prefix ("save profile: ") and cut short.
func errorCauses(log string) map[string]int {
	out := map[string]int{}
	for _, m := range requestErrRE.FindAllStringSubmatch(log, -1) {
		cause := strings.ReplaceAll(m[1], `\"`, `"`)
		if op, rest, ok := strings.Cut(cause, ": "); ok && !strings.ContainsAny(op, ":(") && op == strings.ToLower(op) && op != "ryw" {
			cause = rest
		}
		if len(cause) > 120 {
			cause = cause[:117] + "..."
		}
		out[cause]++
	}
	return out
}

// sessionUser is user (the own-write workload) with a session, as a
// browser keeps one: it saves its profile with a rising version, waits
// 0..readAfter, and reads it back twice in a row (a page and its
// refresh), sending back the X-RYW-Token of the last response. A read
// that shows less than the last acknowledged write is a violation; one
// that shows less than an earlier read of this user showed is a monotonic
// regression.
func sessionUser(ctx context.Context, client *http.Client, api string, readAfter time.Duration) result {
	r := result{reasons: map[string]int{}}
	id := uuid.New()
	var token string
	identify := func(req *http.Request, user uuid.UUID) error {
		req.Header.Set("X-Demo-UserId", user.String())
		if token != "" {
			req.Header.Set("X-RYW-Token", token)
		}
		return nil
	}
	keep := func(h http.Header) {
		if t := h.Get("X-RYW-Token"); t != "" {
			token = t
		}
	}
	problem := func(format string, args ...any) {
		if len(r.firstProblems) < 5 {
			r.firstProblems = append(r.firstProblems, fmt.Sprintf(format, args...))
		}
	}
	highest := 0 // the highest version a read has shown
	for version := 1; ; version++ {
		body := fmt.Sprintf(`{"email":"bench@example.com","name":"v%d"}`, version)
		start := time.Now()
		status, header, _, err := loadgen.CallAs(ctx, client, identify, http.MethodPost, api+"/api/me/profile", id, body)
		if ctx.Err() != nil {
			return r
		}
		if err != nil || status != http.StatusOK {
			r.errors++
			problem("write: %d %v", status, err)
			continue
		}
		keep(header)
		r.writeLatency = append(r.writeLatency, time.Since(start))
		wait := time.Duration(rand.Int64N(int64(readAfter) + 1))
		select {
		case <-ctx.Done():
			return r
		case <-time.After(wait):
		}
		for range 2 {
			start = time.Now()
			status, header, got, err := loadgen.CallAs(ctx, client, identify, http.MethodGet, api+"/api/me", id, "")
			if ctx.Err() != nil {
				return r
			}
			if err != nil || (status != http.StatusOK && status != http.StatusNotFound) {
				r.errors++
				problem("read: %d %v", status, err)
				break
			}
			keep(header)
			r.readLatency = append(r.readLatency, time.Since(start))
			r.reads++
			servedBy := header.Get("X-Served-By")
			if strings.HasPrefix(servedBy, "replica") {
				r.replicaReads++
			}
			r.reasons[header.Get("X-Routing-Reason")]++
			seen := 0
			if status == http.StatusOK {
				fmt.Sscanf(got, "v%d", &seen)
			}
			if seen < version {
				r.violations++
				problem("read %d ms after writing v%d showed %q (served by %s, %s)", wait.Milliseconds(), version, got, servedBy, header.Get("X-Routing-Reason"))
			}
			if seen < highest {
				r.regressions++
				problem("read showed v%d after an earlier read showed v%d (served by %s)", seen, highest, servedBy)
			}
			highest = max(highest, seen)
		}
	}
}

// peerSummary is one configuration's figures over its rounds.
type peerSummary struct {
	started, rounds         int
	peak, vsOff             float64 // medians; 0 when never measured
	roundsVsOff             []float64
	non200                  int // non-200 answers and socket errors in the peaks
	reads, violations, regs int
	ownErrors               int
	peakShare, ownShare     float64 // medians of the known, -1 when none
}

func summarizePeer(r *peerResult, off *peerResult) peerSummary {
	s := peerSummary{rounds: len(r.turns), peakShare: -1, ownShare: -1}
	var peaks, peakShares, ownShares []float64
	for i, t := range r.turns {
		if !t.started {
			continue
		}
		s.started++
		if t.peak.requests > 0 {
			peaks = append(peaks, t.peak.rps())
			if i < len(off.turns) && off.turns[i].peak.requests > 0 {
				s.roundsVsOff = append(s.roundsVsOff, t.peak.rps()/off.turns[i].peak.rps())
			}
		}
		s.non200 += t.peak.bad
		s.reads += t.own.reads
		s.violations += t.own.violations
		s.regs += t.own.regressions
		s.ownErrors += t.own.errors
		if t.peakShare >= 0 {
			peakShares = append(peakShares, t.peakShare)
		}
		if t.ownShare >= 0 {
			ownShares = append(ownShares, t.ownShare)
		}
	}
	s.peak, s.vsOff = loadgen.Median(peaks), loadgen.Median(s.roundsVsOff)
	if len(peakShares) > 0 {
		s.peakShare = loadgen.Median(peakShares)
	}
	if len(ownShares) > 0 {
		s.ownShare = loadgen.Median(ownShares)
	}
	return s
}

// percentOrDash formats a share (0..100), or "-" when unknown (negative).
func percentOrDash(v float64) string {
	if v < 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", v)
}

// route says how a configuration's API reaches the nodes.
func route(p peer) string {
	switch {
	case p.pgpool != "" && p.named:
		return "pgpool only; DATABASE_POOLER=none (pgx's named prepared statements)"
	case p.pgpool != "":
		return "pgpool only; DATABASE_POOLER=session (unnamed statements)"
	case p.label == "every read on the primary":
		return "primary only (DATABASE_REPLICA_URLS empty)"
	}
	return "primary and replicas, direct"
}

// renderPeers writes the report as Markdown.
func renderPeers(rep peersReport, o options, commit string) string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "Measured on commit `%s`, %s, with `make bench%s`.\n\n", commit, time.Now().UTC().Format("2006-01-02"), argsNote(o))
	fmt.Fprintf(&b, "Cluster: a primary and %d streaming replicas on loopback, the last applying WAL %s late (recovery_min_apply_delay); Redis; %s in front of the same nodes, one per disable_load_balance_on_write setting. "+
		"Each configuration is one API process, started for its turn and stopped after it; the configurations take turns, %d round(s), the order rotating. "+
		"In a turn: 1 s of warm-up, then GET /api/me for %s users who saved their profile long before, %d connections in a closed loop (%s) for %s (the peak), "+
		"then the own-write workload with sessions for %s: %d users each saving their profile, waiting 0-%s, and reading it back twice, sending back X-RYW-Token.\n\n",
		o.replicas, o.replicaDelay, rep.version, rep.rounds, humanCount(o.population), o.conns, peakGenerator(), o.phase, o.duration, o.users, o.readAfter)
	w := tabwriter.NewWriter(&b, 0, 0, 1, ' ', tabwriter.Debug)
	fmt.Fprintln(w, "| configuration\t reaches the nodes\t peak req/s\t vs ryw off\t rounds (vs off)\t non-200 at peak\t own-write reads\t violations\t monotonic regressions\t own-write errors\t replica share, peak\t replica share, own-write\t API started\t")
	fmt.Fprintln(w, "|---\t---\t---\t---\t---\t---\t---\t---\t---\t---\t---\t---\t---\t")
	var off *peerResult
	for _, r := range rep.results {
		if r.label == peerOff {
			off = r
		}
	}
	for _, r := range rep.results {
		s := summarizePeer(r, off)
		peak, vs := "-", "-"
		if s.peak > 0 {
			peak = fmt.Sprintf("%.0f", s.peak)
		}
		if len(s.roundsVsOff) > 0 {
			vs = fmt.Sprintf("%.2fx", s.vsOff)
		}
		var rounds []string
		for _, v := range s.roundsVsOff {
			rounds = append(rounds, fmt.Sprintf("%.2f", v))
		}
		fmt.Fprintf(w, "| %s\t %s\t %s\t %s\t %s\t %d\t %d\t %d\t %d\t %d\t %s\t %s\t %d of %d\t\n", r.label, route(r.peer), peak, vs, strings.Join(rounds, " "),
			s.non200, s.reads, s.violations, s.regs, s.ownErrors, percentOrDash(s.peakShare), percentOrDash(s.ownShare), s.started, s.rounds)
	}
	w.Flush()
	fmt.Fprintf(&b, "\nReplica share: for ryw, its read decisions on replicas (ryw_routing_decisions_total) at the peak and X-Served-By in the own-write workload; "+
		"behind pgpool (where X-Served-By always says primary: pgpool is the API's only database), the standbys' share of the SELECTs pgpool routed (select_cnt of SHOW POOL_NODES), "+
		"the API's own included (its monitor's polls, the position it reads after each write). A violation is a read that did not show the user's last acknowledged write; "+
		"a monotonic regression, a read that showed an older version than an earlier read of the same user. Errors are answers other than 200 (and 404 before a first write lands).\n")

	var failures []string
	for _, r := range rep.results {
		for i, t := range r.turns {
			switch {
			case !t.started:
				failures = append(failures, fmt.Sprintf("- %s, round %d: the API did not start in %d attempts: %s", r.label, i+1, t.attempts, t.startErr))
			case t.attempts > 1:
				failures = append(failures, fmt.Sprintf("- %s, round %d: the API started at attempt %d; before: %s", r.label, i+1, t.attempts, t.startErr))
			}
			if t.started && t.peakErr != "" {
				failures = append(failures, fmt.Sprintf("- %s, round %d: no peak: %s", r.label, i+1, firstLine(t.peakErr)))
			}
		}
		causes := slices.Collect(func(yield func(string) bool) {
			for c := range r.causes {
				if !yield(c) {
					return
				}
			}
		})
		slices.SortFunc(causes, func(a, c string) int { return r.causes[c] - r.causes[a] })
		for _, c := range causes {
			failures = append(failures, fmt.Sprintf("- %s: %d request(s) failed with `%s`", r.label, r.causes[c], c))
		}
	}
	if len(failures) > 0 {
		fmt.Fprintf(&b, "\nFailures (API starts, and requests the API logged as failed over the whole turn: warm-up, peak and own-write workload):\n\n%s\n", strings.Join(failures, "\n"))
	}
	var problems []string
	for _, r := range rep.results {
		for _, t := range r.turns {
			for _, p := range t.own.firstProblems {
				if len(problems) < 3*len(rep.results) && strings.Contains(p, "showed") {
					problems = append(problems, fmt.Sprintf("- %s: %s", r.label, p))
					break
				}
			}
		}
	}
	if len(problems) > 0 {
		fmt.Fprintf(&b, "\nFirst stale reads seen, one per configuration and round:\n\n%s\n", strings.Join(problems, "\n"))
	}

	fmt.Fprintf(&b, "\npgpool.conf (every pgpool the same but for disable_load_balance_on_write: %s; listen and file settings left out):\n\n```\n", strings.Join(pgpoolModes, ", "))
	for _, kv := range rep.settings {
		v := kv[1]
		if kv[0] == "disable_load_balance_on_write" {
			v = "'" + strings.Join(pgpoolModes, "' | '") + "'"
		}
		fmt.Fprintf(&b, "%s = %s\n", kv[0], v)
	}
	fmt.Fprintf(&b, "```\n")
	return b.String()
}

// peakGenerator names what measures the closed loop, as tpBench.peak picks it.
func peakGenerator() string {
	if haveWrk() {
		return "wrk"
	}
	return "vegeta (wrk is not installed)"
}

func firstLine(s string) string {
	first, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return first
}

// The markers between which -out puts the peers report, so that it does
// not replace the throughput suite's (beginMarker, endMarker).
const (
	peersBegin = "<!-- rywbench-peers:begin -->"
	peersEnd   = "<!-- rywbench-peers:end -->"
)

// splicePeers puts the report between the peers markers of doc; a
// document without them gets them, with the report, at its end.
func splicePeers(doc, report string) string {
	return spliceAt(doc, report, peersBegin, peersEnd, func() string {
		return appendMarked(doc, "", report, peersBegin, peersEnd)
	})
}

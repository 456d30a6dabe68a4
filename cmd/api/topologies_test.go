package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ryw-go/ryw/internal/devstack"
)

// Read-your-writes on the Redis deployments production runs, on real
// servers: Sentinel (a master, its replica and three sentinels) and Cluster
// (three masters with a replica each), while Redis fails over under load.
// Users save their profile through one instance and read it back through
// another; reads send no token back, so the server alone must get it
// right. Replicas' replay is paused again and again meanwhile, so that a
// read routed to a replica without the user's write shows the old value.
// Each test runs lsn and time instances side by side, and off instances
// as the control, which must read stale values under the same load.

// testWindow is RYW_WINDOW in these tests.
const testWindow = 100 * time.Millisecond

// topologyStack starts a stack of the test's own (it fails Redis over): a
// primary, two replicas and the given Redis topology.
func topologyStack(t *testing.T, topology string, redisReplicas int) *devstack.Stack {
	t.Helper()
	if testAuth != "demo" {
		// The suite's second run only changes how users are named, which
		// nothing here depends on: a minute saved.
		t.Skip("about Redis deployments; run with the demo header only")
	}
	s, err := devstack.Start(t.Context(), devstack.Options{Replicas: 2, Migrate: true, Redis: topology, RedisReplicas: redisReplicas})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// envFor is the API's environment for stack s, plus extra.
func envFor(t *testing.T, s *devstack.Stack, extra ...string) map[string]string {
	env := map[string]string{"HTTP_ADDR": "127.0.0.1:" + freePort(t), "READYZ_DETAILS": "true"}
	if testAuth == "jwt" {
		extra = append(jwtEnv(), extra...)
	}
	for _, kv := range append(s.Env(), extra...) {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	return env
}

// modeLoad is what one RYW_MODE's users saw.
type modeLoad struct {
	mu         sync.Mutex
	rounds     int // write-then-read rounds completed
	stale      int // reads that did not show the write just acknowledged
	status5xx  int
	other      int // transport errors and 4xx
	reasons    map[string]int
	problems   []string
	phase      string
	phaseReads map[string]map[string]int // phase -> reason -> reads
}

func (m *modeLoad) note(format string, args ...any) {
	if len(m.problems) < 10 {
		m.problems = append(m.problems, fmt.Sprintf(format, args...))
	}
}

func (m *modeLoad) done() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rounds
}

// redisFailoverLoad runs users per mode (each mode's instances in apis)
// and a replica pauser until ctx ends.
type redisFailoverLoad struct {
	modes map[string]*modeLoad
	wg    sync.WaitGroup
	phase string
	mu    sync.Mutex
}

func startRedisFailoverLoad(ctx context.Context, s *devstack.Stack, apis map[string][]string, usersPerMode int) *redisFailoverLoad {
	l := &redisFailoverLoad{modes: map[string]*modeLoad{}, phase: "steady"}
	client := &http.Client{Timeout: 15 * time.Second}
	for mode, urls := range apis {
		m := &modeLoad{reasons: map[string]int{}, phaseReads: map[string]map[string]int{}}
		l.modes[mode] = m
		for u := range usersPerMode {
			l.wg.Go(func() {
				user := uuid.New()
				for v := 1; ctx.Err() == nil; v++ {
					name := fmt.Sprintf("u%d-v%d", u, v)
					// Write through one instance, read through another.
					i := rand.IntN(len(urls))
					w := loadRequest(client, http.MethodPost, urls[i]+"/api/me/profile", user, `{"email":"u@example.com","name":"`+name+`"}`)
					if ctx.Err() != nil {
						return
					}
					if w.status != http.StatusOK {
						m.mu.Lock()
						if w.status >= 500 {
							m.status5xx++
						} else {
							m.other++
						}
						m.note("write %s: %d %s (%s)", name, w.status, w.body, w.reason)
						m.mu.Unlock()
						continue
					}
					if mode == "time" {
						// Half the reads after the window: routed by the
						// marks to a replica, rather than to the primary.
						time.Sleep(time.Duration(rand.Int64N(int64(2 * testWindow))))
					}
					r := loadRequest(client, http.MethodGet, urls[(i+1)%len(urls)]+"/api/me", user, "")
					if ctx.Err() != nil {
						return
					}
					phase := l.currentPhase()
					m.mu.Lock()
					m.rounds++
					m.reasons[r.reason]++
					if m.phaseReads[phase] == nil {
						m.phaseReads[phase] = map[string]int{}
					}
					m.phaseReads[phase][r.reason]++
					switch {
					case r.status >= 500:
						m.status5xx++
						m.note("read after %s: %d %s (%s, %s)", name, r.status, r.body, r.servedBy, r.reason)
					case r.status != http.StatusOK && r.status != http.StatusNotFound:
						m.other++
						m.note("read after %s: %d %s", name, r.status, r.body)
					case !strings.Contains(r.body, `"name":"`+name+`"`):
						// Another version, or none yet (404).
						m.stale++
						if mode == "off" {
							break // the control: expected
						}
						m.note("stale read after %s (%s) from %s (%s): %s", name, phase, r.servedBy, r.reason, r.body)
					}
					m.mu.Unlock()
				}
			})
		}
	}
	l.wg.Go(func() { pauseReplicasAgainAndAgain(ctx, s) })
	return l
}

func (l *redisFailoverLoad) currentPhase() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.phase
}

// enter starts a phase of the run (for the report).
func (l *redisFailoverLoad) enter(phase string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.phase = phase
}

// await waits until every mode has completed n more rounds.
func (l *redisFailoverLoad) await(t *testing.T, n int) {
	t.Helper()
	base := map[string]int{}
	for mode, m := range l.modes {
		base[mode] = m.done()
	}
	deadline := time.Now().Add(45 * time.Second)
	for mode, m := range l.modes {
		for m.done() < base[mode]+n {
			if time.Now().After(deadline) {
				t.Fatalf("%s mode: %d rounds in 45s; want %d", mode, m.done()-base[mode], n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// check stops the load and checks it: no stale read, no 5xx and no other
// error in the read-your-writes modes; stale reads in off, the control.
func (l *redisFailoverLoad) check(t *testing.T, stop context.CancelFunc) {
	t.Helper()
	stop()
	l.wg.Wait()
	modes := make([]string, 0, len(l.modes))
	for mode := range l.modes {
		modes = append(modes, mode)
	}
	sort.Strings(modes)
	for _, mode := range modes {
		m := l.modes[mode]
		t.Logf("%s: %d rounds, %d stale, %d 5xx, %d other errors; reasons by phase: %v", mode, m.rounds, m.stale, m.status5xx, m.other, m.phaseReads)
		if mode == "off" {
			if m.stale == 0 {
				t.Errorf("control: RYW_MODE=off read no stale value in %d rounds while replicas were paused", m.rounds)
			}
			continue
		}
		if m.stale > 0 || m.status5xx > 0 || m.other > 0 {
			t.Errorf("%s mode: %d stale reads, %d 5xx, %d other errors in %d rounds; first: %s", mode, m.stale, m.status5xx, m.other, m.rounds, strings.Join(m.problems, "; "))
		}
	}
}

// pauseReplicasAgainAndAgain pauses a random replica's replay for 50-300
// ms, again and again, until ctx ends, and resumes it.
func pauseReplicasAgainAndAgain(ctx context.Context, s *devstack.Stack) {
	for ctx.Err() == nil {
		r := s.Replicas[rand.IntN(len(s.Replicas))]
		if err := r.PauseReplay(ctx); err == nil {
			select {
			case <-ctx.Done():
			case <-time.After(time.Duration(50+rand.IntN(250)) * time.Millisecond):
			}
		}
		_ = r.ResumeReplay(context.WithoutCancel(ctx))
	}
}

// startModes starts instances per mode on stack s and waits until each
// reads from replicas. With Sentinel, each instance lists the sentinels
// from another one on, so that they learn of a failover from different
// sentinels, at different times, as in production.
func startModes(t *testing.T, s *devstack.Stack, instances map[string]int) map[string][]string {
	t.Helper()
	apis := map[string][]string{}
	for mode, n := range instances {
		for i := range n {
			env := []string{"RYW_MODE=" + mode, "RYW_WINDOW=" + testWindow.String()}
			if len(s.Sentinels) > 0 {
				env = append(env, "REDIS_URL="+sentinelURLFrom(s, i+1))
			}
			api, _ := startRun(t, envFor(t, s, env...))
			waitReplicasUsable(t, api)
			apis[mode] = append(apis[mode], api)
		}
	}
	return apis
}

// sentinelURLFrom is the stack's Sentinel URL with the sentinels listed
// from the first-th on.
func sentinelURLFrom(s *devstack.Stack, first int) string {
	n := len(s.Sentinels)
	u := fmt.Sprintf("redis://%s/0?master_name=%s", s.Sentinels[first%n].Addr(), devstack.SentinelMaster)
	for i := 1; i < n; i++ {
		u += "&addr=" + s.Sentinels[(first+i)%n].Addr()
	}
	return u
}

// TestRedisSentinelFailoverUnderLoad: an operator's failover (SENTINEL
// FAILOVER), during which the old master goes on taking writes for seconds
// until the sentinels turn it into a replica, and then a crash of the
// master (SIGKILL) that the sentinels fail over, and the crashed node
// coming back as a replica: no stale own-write read and no 5xx in lsn and
// time mode.
func TestRedisSentinelFailoverUnderLoad(t *testing.T) {
	ctx := t.Context()
	s := topologyStack(t, devstack.RedisSentinel, 0)
	apis := startModes(t, s, map[string]int{"lsn": 2, "time": 2, "off": 1})
	loadCtx, stop := context.WithCancel(ctx)
	defer stop()
	l := startRedisFailoverLoad(loadCtx, s, apis, 3)
	l.await(t, 30)

	l.enter("sentinel-failover")
	if _, err := s.SentinelFailover(ctx); err != nil {
		t.Fatal(err)
	}
	l.await(t, 20)
	if err := s.WaitRedis(ctx); err != nil {
		t.Fatal(err)
	}
	l.enter("after-failover")
	l.await(t, 20)

	l.enter("master-killed")
	killed, err := s.KillRedisMaster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	l.await(t, 20)
	if err := killed.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitRedis(ctx); err != nil {
		t.Fatal(err)
	}
	l.enter("rejoined")
	l.await(t, 20)
	l.check(t, stop)
}

// TestRedisClusterFailoverUnderLoad: a Redis Cluster of three masters with
// a replica each; one master hands over to its replica (CLUSTER FAILOVER),
// another crashes (SIGKILL) and its replica is elected, then it comes back
// as a replica: no stale own-write read and no 5xx in lsn and time mode.
func TestRedisClusterFailoverUnderLoad(t *testing.T) {
	ctx := t.Context()
	s := topologyStack(t, devstack.RedisCluster, 1)
	apis := startModes(t, s, map[string]int{"lsn": 2, "time": 2, "off": 1})
	loadCtx, stop := context.WithCancel(ctx)
	defer stop()
	l := startRedisFailoverLoad(loadCtx, s, apis, 3)
	l.await(t, 30)

	l.enter("cluster-failover")
	if _, err := s.ClusterFailover(ctx, devstack.ClusterFailoverOptions{Shard: 0}); err != nil {
		t.Fatal(err)
	}
	l.await(t, 20)

	l.enter("master-killed")
	res, err := s.ClusterFailover(ctx, devstack.ClusterFailoverOptions{Shard: 1, Kill: true})
	if err != nil {
		t.Fatal(err)
	}
	l.await(t, 20)
	if err := res.Old.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitRedis(ctx); err != nil {
		t.Fatal(err)
	}
	l.enter("rejoined")
	l.await(t, 20)
	l.check(t, stop)
}

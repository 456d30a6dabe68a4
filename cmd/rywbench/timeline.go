package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/ryw-go/ryw/internal/devstack"
	"github.com/ryw-go/ryw/internal/loadgen"
	"github.com/ryw-go/ryw/ryw"
)

// The pause timeline: one user saves a profile every writeEvery and reads
// it back as fast as it can, while one replica's replay is paused from
// pauseAt to resumeAt. Where each read went, whether it was fresh, and the
// paused replica's lag, on one time axis: the picture of the bug and of
// the routing that avoids it.
const (
	timelineLength = 6 * time.Second
	pauseAt        = 1500 * time.Millisecond
	resumeAt       = 4500 * time.Millisecond
	writeEvery     = 250 * time.Millisecond
)

// timeline is one mode's run.
type timeline struct {
	mode    string
	paused  string // the replica paused
	reads   []timelineRead
	lag     []lagPoint // the paused replica's replay lag
	stale   int
	replica int // reads served by a replica
}

type timelineRead struct {
	at       time.Duration // since the start
	servedBy string
	fresh    bool
}

type lagPoint struct {
	at    time.Duration
	bytes float64
}

// pauseTimeline runs the timeline against one API. The last replica is
// paused.
func pauseTimeline(ctx context.Context, stack *devstack.Stack, api *devstack.API, mode string, stderr io.Writer) (timeline, error) {
	fmt.Fprintf(stderr, "rywbench:   %s: pause timeline, %s\n", mode, timelineLength)
	tl := timeline{mode: mode}
	replica := stack.Replicas[len(stack.Replicas)-1]
	tl.paused = replica.Name
	client := &http.Client{Timeout: 5 * time.Second}
	user := uuid.New()
	if st, _, _, err := loadgen.Call(ctx, client, http.MethodPost, api.URL+"/api/me/profile", user, `{"email":"t@example.com","name":"v0"}`); err != nil || st != http.StatusOK {
		return tl, fmt.Errorf("timeline: first write: %d %v", st, err)
	}
	if err := stack.WaitCaughtUp(ctx); err != nil {
		return tl, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	defer replica.ResumeReplay(context.WithoutCancel(ctx)) //nolint:errcheck // best effort if the run fails half-way

	// The paused replica's lag, every 50 ms, as the primary's position
	// minus the replica's replay position.
	lagDone := make(chan struct{})
	go func() {
		defer close(lagDone)
		for ctx.Err() == nil && time.Since(start) < timelineLength {
			p, err1 := stack.Primary.CurrentLSN(ctx)
			r, err2 := replica.ReplayLSN(ctx)
			if err1 == nil && err2 == nil {
				tl.lag = append(tl.lag, lagPoint{at: time.Since(start), bytes: float64(ryw.LSN(max(0, int64(p)-int64(r))))})
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()

	version, acked := 0, "v0"
	nextWrite := start
	paused, resumed := false, false
	for time.Since(start) < timelineLength {
		now := time.Since(start)
		switch {
		case !paused && now >= pauseAt:
			if err := replica.PauseReplay(ctx); err != nil {
				return tl, err
			}
			paused = true
		case paused && !resumed && now >= resumeAt:
			if err := replica.ResumeReplay(ctx); err != nil {
				return tl, err
			}
			resumed = true
		}
		if time.Now().After(nextWrite) {
			version++
			name := fmt.Sprintf("v%d", version)
			st, _, _, err := loadgen.Call(ctx, client, http.MethodPost, api.URL+"/api/me/profile", user, `{"email":"t@example.com","name":"`+name+`"}`)
			if err != nil || st != http.StatusOK {
				return tl, fmt.Errorf("timeline: write: %d %v", st, err)
			}
			acked = name
			nextWrite = nextWrite.Add(writeEvery)
		}
		at := time.Since(start)
		st, h, got, err := loadgen.Call(ctx, client, http.MethodGet, api.URL+"/api/me", user, "")
		if err != nil || st != http.StatusOK {
			return tl, fmt.Errorf("timeline: read: %d %v", st, err)
		}
		r := timelineRead{at: at, servedBy: h.Get("X-Served-By"), fresh: got == acked}
		tl.reads = append(tl.reads, r)
		if !r.fresh {
			tl.stale++
		}
		if r.servedBy != "primary" {
			tl.replica++
		}
		time.Sleep(20 * time.Millisecond) // a user's pace, so that the picture is readable, not a load test
	}
	cancel()
	<-lagDone
	return tl, nil
}

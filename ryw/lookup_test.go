package ryw_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ryw-go/ryw/ryw"
)

// BenchmarkLookup is the own-read lookup against devstack's Redis, per
// mode: alone (one lookup per pipeline, a round trip each) and batched
// (16 goroutines on each CPU, as a loaded API, so that lookups share
// pipelines). Compare the modes, or two builds, in one run:
//
//	go test ./ryw -run '^$' -bench Lookup -benchmem -count 8
func BenchmarkLookup(b *testing.B) {
	needStack(b)
	tracker, _ := newTracker(b, 10*time.Minute)
	ctx := b.Context()
	const users = 256
	prefix := fmt.Sprintf("bench-lookup-%d-", seq.Add(1))
	for i := range users {
		if _, err := tracker.Record(ctx, fmt.Sprint(prefix, i), tl1(ryw.LSN(0x1_0000_0000+i))); err != nil {
			b.Fatal(err)
		}
	}
	names := make([]string, users)
	for i := range names {
		names[i] = fmt.Sprint(prefix, i)
	}
	for _, mode := range []string{"time", "lsn"} {
		lookup := func(ctx context.Context, user string) error {
			m, err := tracker.Lookup(ctx, user, mode == "time")
			if err == nil && m.Token.IsZero() {
				err = fmt.Errorf("%s: no token", user)
			}
			return err
		}
		b.Run(mode+"/alone", func(b *testing.B) {
			i := 0
			for b.Loop() {
				if err := lookup(ctx, names[i%users]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
		b.Run(mode+"/batched", func(b *testing.B) {
			var next atomic.Int64
			before := tracker.LookupPipelines()
			b.SetParallelism(16)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := lookup(ctx, names[next.Add(1)%users]); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/float64(tracker.LookupPipelines()-before), "lookups/pipeline")
		})
	}
}

package ryw_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ryw-go/ryw/ryw"
)

// BenchmarkLookup is the own-read lookup against devstack's Redis, per
// mode, with the tracker's cache (cached: every user was looked up before,
// so a lookup waits for a shared barrier only) and without (redis): alone (one
// lookup at a time, a round trip each) and batched (8 goroutines on each
// CPU, so that lookups share pipelines, or barriers, about as many to one as
// in the API under a closed loop, 6-9). redis-µs/op is Redis's own CPU
// per lookup (INFO cpu). Compare the modes, or two builds, in one run:
//
//	go test ./ryw -run '^$' -bench Lookup -benchmem -count 8
func BenchmarkLookup(b *testing.B) {
	needStack(b)
	cached, client := newTracker(b, 10*time.Minute)
	uncached, _ := newTrackerWith(b, ryw.TrackerConfig{TTL: 10 * time.Minute, CacheUsers: -1})
	ctx := b.Context()
	const users = 256
	prefix := fmt.Sprintf("bench-lookup-%d-", seq.Add(1))
	for i := range users {
		if _, err := uncached.Record(ctx, fmt.Sprint(prefix, i), tl1(ryw.LSN(0x1_0000_0000+i))); err != nil {
			b.Fatal(err)
		}
	}
	names := make([]string, users)
	for i := range names {
		names[i] = fmt.Sprint(prefix, i)
	}
	for _, variant := range []struct {
		name    string
		tracker *ryw.RedisTracker
	}{{"redis", uncached}, {"cached", cached}} {
		for _, mode := range []string{"time", "lsn"} {
			tracker := variant.tracker
			for _, user := range names {
				// Fill the cache (the batches after the fill would anyway).
				if _, err := tracker.Lookup(ctx, user, mode == "time"); err != nil {
					b.Fatal(err)
				}
			}
			lookup := func(ctx context.Context, user string) error {
				m, err := tracker.Lookup(ctx, user, mode == "time")
				if err == nil && m.Token.IsZero() {
					err = fmt.Errorf("%s: no token", user)
				}
				return err
			}
			b.Run(variant.name+"/"+mode+"/alone", func(b *testing.B) {
				defer redisCPU(b, client)()
				i := 0
				for b.Loop() {
					if err := lookup(ctx, names[i%users]); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
			b.Run(variant.name+"/"+mode+"/batched", func(b *testing.B) {
				defer redisCPU(b, client)()
				var next atomic.Int64
				_, barriers := tracker.CachedLookups()
				before := tracker.LookupPipelines() + barriers
				b.SetParallelism(8)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := lookup(ctx, names[next.Add(1)%users]); err != nil {
							b.Error(err)
							return
						}
					}
				})
				_, barriers = tracker.CachedLookups()
				b.ReportMetric(float64(b.N)/float64(tracker.LookupPipelines()+barriers-before), "lookups/round-trip")
			})
		}
	}
}

// redisCPU reports Redis's CPU per op from now until the returned func runs.
func redisCPU(b *testing.B, client redis.UniversalClient) func() {
	used := func() time.Duration {
		info, err := client.Info(b.Context(), "cpu").Result()
		if err != nil {
			b.Fatal(err)
		}
		var total float64
		for _, line := range strings.Split(info, "\n") {
			k, v, _ := strings.Cut(strings.TrimSpace(line), ":")
			if k == "used_cpu_sys" || k == "used_cpu_user" {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil {
					b.Fatal(err)
				}
				total += f
			}
		}
		return time.Duration(total * float64(time.Second))
	}
	start := used()
	return func() {
		b.ReportMetric(float64((used()-start).Microseconds())/float64(b.N), "redis-µs/op")
	}
}

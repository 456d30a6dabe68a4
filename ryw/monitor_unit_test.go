package ryw

import (
	"context"
	"database/sql"
	"net"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
)

// TestARejoiningPoolsOpeningStopsWithTheMonitor: the opening of a
// returning replica's read pool (see rejoining) runs under the monitor's
// Run, so that a balancer that closes stops it and waits for it before it
// closes the pools. The replica here accepts connections and never
// answers, so the opening would hold on for warmTimeout (5 s) if the
// monitor's end did not stop it.
func TestARejoiningPoolsOpeningStopsWithTheMonitor(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, unanswered, until the test ends
		}
	}()
	db, err := sql.Open("pgx", "postgres://app@"+l.Addr().String()+"/app?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(2)

	// A primary that refuses connections: its polls fail at once.
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	primary, err := sql.Open("pgx", "postgres://app@"+closed.Addr().String()+"/app?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	defer primary.Close()

	m := NewMonitor(primary, nil, time.Hour, nil)
	m.warmReadPools([]NodeDB{{Name: "r1", DB: db}})
	ctx, stop := context.WithCancel(t.Context())
	ran := make(chan struct{})
	go func() {
		m.Run(ctx) // one failed poll of the primary, then it waits for its end
		close(ran)
	}()
	// Run has started once it has taken its context.
	for {
		m.mu.RLock()
		started := m.runCtx != nil
		m.mu.RUnlock()
		if started {
			break
		}
		time.Sleep(time.Millisecond)
	}
	m.mu.Lock()
	if !m.rejoining("r1") {
		t.Error("rejoining = false for a replica whose pool has not opened")
	}
	m.mu.Unlock()

	began := time.Now()
	stop()
	<-ran
	m.mu.RLock()
	w := *m.warms["r1"]
	m.mu.RUnlock()
	if !w.done || w.running {
		t.Errorf("after Run returned, the opening is %+v; want it over", w)
	}
	if took := time.Since(began); took >= warmTimeout {
		t.Errorf("Run took %s to return; the opening held it for its own deadline", took)
	}
}

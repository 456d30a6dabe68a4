package devstack

import (
	"context"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestHAProxyKeepsTheServersConnectionsFew: 12 clients at once through an
// HAProxy with maxconn 2 reach the server 2 at a time, over at most 2
// connections per HAProxy thread (each thread keeps idle connections of
// its own; there are as many threads as CPUs), and every one is answered:
// the others wait in HAProxy's queue, not in the server.
func TestHAProxyKeepsTheServersConnectionsFew(t *testing.T) {
	if testing.Short() {
		t.Skip("starts HAProxy")
	}
	if !HaveHAProxy() {
		t.Skip("HAProxy is not installed (apt-get install haproxy; .ci/run installs it)")
	}
	var inFlight, most atomic.Int32
	var conns sync.Map
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conns.Store(r.RemoteAddr, true)
		n := inFlight.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		<-release
		inFlight.Add(-1)
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	h, err := StartHAProxy(t.Context(), t.TempDir(), strings.TrimPrefix(srv.URL, "http://"), 2)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Stop(context.WithoutCancel(t.Context()))

	const clients = 12
	codes := make(chan int, clients)
	for range clients {
		go func() {
			resp, err := http.Get(h.URL() + "/x")
			if err != nil {
				t.Error(err)
				codes <- 0
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	// Release the requests one by one, each time the server holds as many
	// as it may (2, or the ones left).
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for left := clients; left > 0; left-- {
		want := int32(min(2, left))
		if err := poll(ctx, time.Millisecond, func(context.Context) (bool, error) { return inFlight.Load() >= want, nil }); err != nil {
			t.Fatalf("the server holds %d requests, want %d: %v", inFlight.Load(), want, err)
		}
		release <- struct{}{}
	}
	for range clients {
		if code := <-codes; code != http.StatusOK {
			t.Errorf("a client got %d, want 200", code)
		}
	}
	if m := most.Load(); m > 2 {
		t.Errorf("the server held %d requests at once behind maxconn 2", m)
	}
	n := 0
	conns.Range(func(any, any) bool { n++; return true })
	if limit := 2 * runtime.NumCPU(); n > limit || n >= clients {
		t.Errorf("HAProxy opened %d connections to the server for %d clients, want at most %d (maxconn 2, reused, on each of %d threads)", n, clients, limit, runtime.NumCPU())
	}
}

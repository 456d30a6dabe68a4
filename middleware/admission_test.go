package middleware

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
)

// admissionServer is a handler behind Admission(limit, maxWait) that holds
// each request until release gets a value, and records the order in
// which requests got in.
type admissionServer struct {
	engine  *gin.Engine
	reg     *prometheus.Registry
	release chan struct{}
	mu      sync.Mutex
	order   []string
	errs    map[string]error
	once    sync.Once
}

func newAdmissionServer(t *testing.T, limit int, maxWait time.Duration) *admissionServer {
	t.Helper()
	gin.SetMode(gin.TestMode)
	s := &admissionServer{engine: gin.New(), reg: prometheus.NewRegistry(), release: make(chan struct{}), errs: map[string]error{}}
	s.engine.Use(func(c *gin.Context) {
		c.Next()
		if len(c.Errors) > 0 {
			s.mu.Lock()
			s.errs[c.Query("n")] = c.Errors.Last().Err
			s.mu.Unlock()
			c.Status(http.StatusServiceUnavailable)
		}
	})
	t.Cleanup(s.releaseAll)
	s.engine.GET("/", Admission(limit, maxWait, s.reg), func(c *gin.Context) {
		s.mu.Lock()
		s.order = append(s.order, c.Query("n"))
		s.mu.Unlock()
		<-s.release
		c.Status(http.StatusOK)
	})
	return s
}

// releaseAll lets every held request end, once.
func (s *admissionServer) releaseAll() { s.once.Do(func() { close(s.release) }) }

// send starts request n with ctx; the returned channel gets its status.
func (s *admissionServer) send(ctx context.Context, n int) <-chan int {
	done := make(chan int, 1)
	go func() {
		req := httptest.NewRequestWithContext(ctx, http.MethodGet, "/?n="+strconv.Itoa(n), nil)
		rec := httptest.NewRecorder()
		s.engine.ServeHTTP(rec, req)
		done <- rec.Code
	}()
	return done
}

// waitFor polls until cond holds (no sleeping for correctness: the
// requests' progress is what the test waits for).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// status waits for a request's status, failing the test rather than
// hanging it when the request never ends.
func status(t *testing.T, done <-chan int) int {
	t.Helper()
	select {
	case code := <-done:
		return code
	case <-time.After(5 * time.Second):
		t.Fatal("timed out waiting for a request to end")
		return 0
	}
}

// parkedInTake counts the goroutines blocked in take's wait for a slot.
func parkedInTake() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	parked := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, " [select") && strings.Contains(g, "middleware.take(") {
			parked++
		}
	}
	return parked
}

func (s *admissionServer) waiting() float64 { return metricValue(s.reg, "ryw_http_requests_waiting") }

func (s *admissionServer) in() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.order)
}

// metricValue is the value of the unlabelled gauge or counter name in reg.
func metricValue(reg *prometheus.Registry, name string) float64 {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			m := mf.GetMetric()[0]
			return m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	return -1
}

func TestAdmissionLetsWaitersInInArrivalOrder(t *testing.T) {
	s := newAdmissionServer(t, 2, time.Minute)
	var done []<-chan int
	for n := range 2 {
		done = append(done, s.send(t.Context(), n))
	}
	waitFor(t, "the first two requests to get in", func() bool { return s.in() == 2 })
	// The rest queue, one at a time so that their arrival order is known:
	// each is waited for until it is parked on the queue itself, not only
	// counted as waiting (the gauge rises just before it parks).
	for n := 2; n < 6; n++ {
		done = append(done, s.send(t.Context(), n))
		waitFor(t, "request "+strconv.Itoa(n)+" to queue", func() bool { return s.waiting() == float64(n-1) && parkedInTake() == n-1 })
	}
	if got := s.in(); got != 2 {
		t.Fatalf("%d requests in progress with a limit of 2", got)
	}
	for i := 2; i < 6; i++ {
		s.release <- struct{}{}
		waitFor(t, "the next request to get in", func() bool { return s.in() == i+1 })
		if got := s.in(); got != i+1 {
			t.Fatalf("releasing one request let %d in, want %d", got, i+1)
		}
	}
	s.releaseAll()
	for n, d := range done {
		if code := status(t, d); code != http.StatusOK {
			t.Errorf("request %d: status %d, want 200", n, code)
		}
	}
	want := []string{"0", "1", "2", "3", "4", "5"}
	s.mu.Lock()
	defer s.mu.Unlock()
	// The first two may get in in either order; the queue must keep its.
	if got := s.order[2:]; !slices.Equal(got, want[2:]) {
		t.Errorf("queued requests got in in the order %v, want %v", got, want[2:])
	}
}

func TestAdmissionShedsWhatWaitsTooLong(t *testing.T) {
	s := newAdmissionServer(t, 1, 20*time.Millisecond)
	first := s.send(t.Context(), 0)
	waitFor(t, "the first request to get in", func() bool { return s.in() == 1 })
	if code := status(t, s.send(t.Context(), 1)); code != http.StatusServiceUnavailable {
		t.Fatalf("a request that waited past MAX_QUEUE_WAIT: status %d, want 503", code)
	}
	s.mu.Lock()
	err := s.errs["1"]
	s.mu.Unlock()
	if !errors.Is(err, ErrBusy) {
		t.Errorf("the refused request's error is %v, want ErrBusy", err)
	}
	if got := metricValue(s.reg, "ryw_http_requests_shed_total"); got != 1 {
		t.Errorf("ryw_http_requests_shed_total = %v, want 1", got)
	}
	if got := s.waiting(); got != 0 {
		t.Errorf("ryw_http_requests_waiting = %v after the request left, want 0", got)
	}
	s.releaseAll()
	if code := status(t, first); code != http.StatusOK {
		t.Errorf("the request in progress: status %d, want 200", code)
	}
	// Its place is free again.
	if code := status(t, s.send(t.Context(), 2)); code != http.StatusOK {
		t.Errorf("a request after the first finished: status %d, want 200", code)
	}
}

func TestAdmissionLetsAWaiterGoWhenItsClientDoes(t *testing.T) {
	s := newAdmissionServer(t, 1, time.Minute)
	first := s.send(t.Context(), 0)
	waitFor(t, "the first request to get in", func() bool { return s.in() == 1 })
	ctx, cancel := context.WithCancel(t.Context())
	second := s.send(ctx, 1)
	waitFor(t, "the second request to queue", func() bool { return s.waiting() == 1 })
	cancel()
	status(t, second)
	s.mu.Lock()
	err := s.errs["1"]
	s.mu.Unlock()
	if !errors.Is(err, context.Canceled) {
		t.Errorf("the abandoned request's error is %v, want context.Canceled", err)
	}
	if got := metricValue(s.reg, "ryw_http_requests_shed_total"); got != 0 {
		t.Errorf("ryw_http_requests_shed_total = %v, want 0: the client left, nothing was shed", got)
	}
	s.releaseAll()
	status(t, first)
	if got := s.in(); got != 1 {
		t.Errorf("%d requests reached the handler, want 1", got)
	}
}

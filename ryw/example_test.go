package ryw_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/ryw-go/ryw/ryw"
)

// The addresses in these examples answer nothing, so that they run
// anywhere: a Balancer starts with its nodes down, and serves once they
// answer. When unsure, it reads from the primary.

func ExampleNew() {
	ctx := context.Background()
	rw, err := ryw.New(ctx, ryw.Config{
		Primary:  "postgres://app@127.0.0.1:1/app",
		Replicas: []ryw.Replica{{URL: "postgres://app@127.0.0.1:2/app"}},
		Redis:    "redis://127.0.0.1:3/0",
		Mode:     ryw.ModeLSN,
		TokenKey: []byte("a random secret of 32 bytes or more, the same everywhere"),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer rw.Close()

	// Build repositories on rw.GORM(), or sqlc's queries on rw.SQL().
	_ = rw.GORM()
	for _, r := range rw.Status() {
		fmt.Printf("%s healthy: %t\n", r.Name, r.Healthy)
	}
	// Output:
	// replica1 healthy: false
}

func ExampleNew_invalid() {
	_, err := ryw.New(context.Background(), ryw.Config{
		Primary:   "postgres://app@127.0.0.1:1/app",
		MarkerTTL: time.Second, // shorter than the read-your-writes window
	})
	fmt.Println(err)
	// Output:
	// ryw: invalid configuration: MarkerTTL (1s) must be at least Window (5s), or marks expire inside the window
}

func ExampleBalancer_Middleware() {
	rw, err := ryw.New(context.Background(), ryw.Config{
		Primary:  "postgres://app@127.0.0.1:1/app",
		Replicas: []ryw.Replica{{Name: "replica1", URL: "postgres://app@127.0.0.1:2/app"}},
		Redis:    "redis://127.0.0.1:3/0",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer rw.Close()

	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/me", func(w http.ResponseWriter, r *http.Request) {
		// A repository runs rw.GORM().WithContext(r.Context())... here:
		// routed, checked and retried with no ryw call.
		fmt.Fprintln(w, "hello")
	})
	handler := rw.Middleware(ryw.HTTPOptions{
		// Who the caller is: whose writes the reads must show.
		User: func(r *http.Request) (string, error) { return r.Header.Get("X-User-Id"), nil },
		// Which requests may be slightly stale (the rest of GET must show
		// the caller's writes; other methods write).
		Access: func(r *http.Request) ryw.Access {
			if r.URL.Path == "/api/products" {
				return ryw.StaleRead
			}
			return ryw.DefaultAccess(r)
		},
	})(mux)

	req := httptest.NewRequest("GET", "/api/me", nil)
	req.Header.Set("X-User-Id", "42")
	rec := httptest.NewRecorder()
	handler.ServeHTTP(rec, req)
	// Redis does not answer, so this user's writes are unknown: the read
	// goes to the primary.
	fmt.Println(rec.Code, rec.Header().Get(ryw.ReasonHeader))
	// Output:
	// 200 tracker-unavailable
}

func ExampleBalancer_Begin() {
	rw, err := ryw.New(context.Background(), ryw.Config{
		Primary: "postgres://app@127.0.0.1:1/app",
		Redis:   "redis://127.0.0.1:3/0",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer rw.Close()

	// A job outside HTTP, acting for user 42: its statements are routed
	// like that user's requests, and Finish records its writes.
	ctx, job := rw.Begin(context.Background(), "42", ryw.Write)
	_ = rw.GORM().WithContext(ctx) // ... Create, Save, Exec ...
	if err := job.Finish(); err != nil {
		fmt.Println("tell the user:", err)
	}
	fmt.Println(job.Decision().Node, job.Decision().Reason)
	// Output:
	// primary write
}

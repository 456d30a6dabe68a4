package ryw

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// deadBalancer is a balancer whose nodes answer nothing: enough for the
// middleware's own logic, which these tests are about.
func deadBalancer(t *testing.T) *Balancer {
	t.Helper()
	b, err := New(t.Context(), Config{
		Primary:  "postgres://app@127.0.0.1:1/app",
		Replicas: []Replica{{URL: "postgres://app@127.0.0.1:2/app"}},
		Redis:    "redis://127.0.0.1:3/0",
		TokenKey: []byte(strings.Repeat("k", MinTokenKeyLen)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func serve(h http.Handler, method string, header http.Header) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, "/x", nil)
	for k, v := range header {
		req.Header[http.CanonicalHeaderKey(k)] = v
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func errorCode(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	var body ErrorBody
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("body %q is not the JSON error shape: %v", rec.Body, err)
	}
	return body.Error.Code
}

func TestMiddlewareRefusesWhatItCannotTrust(t *testing.T) {
	b := deadBalancer(t)
	ran := false
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { ran = true })
	user := func(r *http.Request) (string, error) {
		if r.Header.Get("X-User") == "" {
			return "", errors.New("no X-User header")
		}
		return r.Header.Get("X-User"), nil
	}
	h := b.Middleware(HTTPOptions{User: user})(next)

	for _, tc := range []struct {
		name   string
		header http.Header
		status int
		code   string
	}{
		{"no user", http.Header{}, 401, "unauthenticated"},
		{"a token that is not one", http.Header{"X-User": {"u1"}, TokenHeader: {"garbage"}}, 400, "invalid_token"},
		{"a cookie that is not one", http.Header{"X-User": {"u1"}, "Cookie": {TokenCookie + "=s1.garbage"}}, 400, "invalid_token"},
	} {
		ran = false
		rec := serve(h, "GET", tc.header)
		if rec.Code != tc.status || errorCode(t, rec) != tc.code || ran {
			t.Errorf("%s: %d %s (handler ran: %t), want %d %s and no handler", tc.name, rec.Code, rec.Body, ran, tc.status, tc.code)
		}
	}

	// Another user's token is a real token: ignored, not refused.
	other := b.signer.Sign("u2", Session{Write: Position{LSN: 0x3000000}})
	rec := serve(h, "GET", http.Header{"X-User": {"u1"}, TokenHeader: {other}})
	if rec.Code != 200 || !ran {
		t.Errorf("a token signed for another user: %d %s, want it ignored and the handler run", rec.Code, rec.Body)
	}
	if n := b.Counts().IgnoredTokens[TokenBadSignature]; n != 1 {
		t.Errorf("ignored tokens counted: %d, want 1", n)
	}
}

// A write whose outcome is unknown must not be answered as if all were
// well: the handler's response is replaced, whatever it was.
func TestAWriteOfUnknownOutcomeIsAnsweredUnconfirmed(t *testing.T) {
	b := deadBalancer(t)
	for _, tc := range []struct {
		name    string
		handler func(w http.ResponseWriter, r *http.Request)
	}{
		{"written", func(w http.ResponseWriter, r *http.Request) {
			observationFrom(r.Context()).wrote(true)
			w.Header().Set("Content-Length", "2")
			w.WriteHeader(201)
			w.Write([]byte("ok"))
		}},
		{"nothing written", func(w http.ResponseWriter, r *http.Request) {
			observationFrom(r.Context()).wrote(true)
		}},
		{"written after a flush", func(w http.ResponseWriter, r *http.Request) {
			observationFrom(r.Context()).wrote(true)
			http.NewResponseController(w).Flush()
			w.Write([]byte("ok"))
		}},
	} {
		h := b.Middleware(HTTPOptions{User: func(*http.Request) (string, error) { return "", nil }})(http.HandlerFunc(tc.handler))
		rec := serve(h, "POST", nil)
		if rec.Code != 503 || errorCode(t, rec) != "write_unconfirmed" || rec.Header().Get("Content-Length") != "" {
			t.Errorf("%s: %d %q %v, want 503 write_unconfirmed", tc.name, rec.Code, rec.Body, rec.Header())
		}
		if rec.Header().Get(ServedByHeader) == "" || rec.Header().Get(ReasonHeader) != string(ReasonWrite) {
			t.Errorf("%s: routing headers %v", tc.name, rec.Header())
		}
	}

	// Control: the same handler without the write answers as it says.
	h := b.Middleware(HTTPOptions{User: func(*http.Request) (string, error) { return "", nil }})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(201)
	}))
	if rec := serve(h, "POST", nil); rec.Code != 201 {
		t.Errorf("no write: %d, want the handler's 201", rec.Code)
	}
}

func TestMiddlewareAccess(t *testing.T) {
	b := deadBalancer(t)
	var got Decision
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got, _ = DecisionFrom(r.Context()) })
	user := func(r *http.Request) (string, error) { return r.Header.Get("X-User"), nil }
	for _, tc := range []struct {
		method, user string
		access       func(*http.Request) Access
		reason       Reason
	}{
		{"POST", "u1", nil, ReasonWrite},
		{"DELETE", "u1", nil, ReasonWrite},
		// Redis answers nothing: the user's writes are unknown.
		{"GET", "u1", nil, ReasonTrackerUnavailable},
		// Nobody's writes to show, and the primary unconfirmed: the
		// stale-ok read goes to the primary too, for its own reason.
		{"GET", "", nil, ReasonFenceUnknown},
		{"GET", "u1", Always(StaleRead), ReasonFenceUnknown},
		{"GET", "u1", Always(UncheckedRead), ReasonNoReplica},
	} {
		h := b.Middleware(HTTPOptions{User: user, Access: tc.access})(next)
		rec := serve(h, tc.method, http.Header{"X-User": {tc.user}})
		if got.Reason != tc.reason || !got.OnPrimary() || rec.Header().Get(ReasonHeader) != string(tc.reason) || rec.Header().Get(ServedByHeader) != "none" {
			t.Errorf("%s as %q: decision %+v, headers %v; want %s on the primary", tc.method, tc.user, got, rec.Header(), tc.reason)
		}
	}
}

func TestConfigValidation(t *testing.T) {
	ok := "postgres://app@127.0.0.1:1/app"
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no primary", Config{}, "Primary is required"},
		{"not a URL", Config{Primary: "mysql://x"}, "not a PostgreSQL URL"},
		{"mode", Config{Primary: ok, Mode: "fast"}, `Mode must be`},
		{"unknown writes on replicas in time mode", Config{Primary: ok, UnknownWritesOnReplicas: true}, `UnknownWritesOnReplicas needs ModeLSN, got mode "time"`},
		{"ttl inside the window", Config{Primary: ok, MarkerTTL: 2e9, Window: 3e9}, "MarkerTTL (2s) must be at least Window (3s)"},
		{"poll outside the lease", Config{Primary: ok, PollInterval: 300e6}, "PollInterval must be at most a fifth of FenceLease"},
		{"short key", Config{Primary: ok, TokenKey: []byte("short")}, "TokenKey must be at least 32 bytes"},
		{"same name twice", Config{Primary: ok, Replicas: []Replica{{Name: "r", URL: ok}, {Name: "r", URL: ok}}}, `"r" is used twice`},
		{"a replica called primary", Config{Primary: ok, Replicas: []Replica{{Name: Primary, URL: ok}}}, `is used twice (or is "primary"`},
		{"bad name", Config{Primary: ok, Replicas: []Replica{{Name: "1 r", URL: ok}}}, "must be a letter"},
		{"negative", Config{Primary: ok, ReplicaTimeout: -1}, "ReplicaTimeout must be positive"},
	} {
		_, err := tc.cfg.withDefaults()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
	}
	c, err := Config{Primary: ok, Replicas: []Replica{{URL: ok}, {URL: ok}}}.withDefaults()
	if err != nil || c.Replicas[1].Name != "replica2" || c.Mode != ModeTime || c.MarkerTTL != DefaultMarkerTTL || c.Logger == nil {
		t.Errorf("defaults: %+v, %v", c, err)
	}
}

func TestPlainRead(t *testing.T) {
	for q, want := range map[string]bool{
		`SELECT * FROM users WHERE id = $1`:                     true,
		"\n\t select 1":                                         true,
		`(SELECT 1) UNION (SELECT 2)`:                           true,
		`SHOW server_version`:                                   true,
		`selection`:                                             false,
		`INSERT INTO users VALUES ($1) RETURNING *`:             false,
		`WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d`: false,
		`UPDATE t SET v = 1`:                                    false,
		``:                                                      false,
		"-- name: GetUser :one\nSELECT id FROM users WHERE id = $1": true,
		"/* app:profile */ SELECT 1":                                true,
		"-- one\n-- two\n  /* three */\n(SELECT 1)":                 true,
		"-- name: CreateUser :one\nINSERT INTO users VALUES ($1)":   false,
		"-- only a comment":                                         false,
		"/* unterminated SELECT 1":                                  false,
		"/* a /* nested */ comment */ SELECT 1":                     false,
	} {
		if got := plainRead(q); got != want {
			t.Errorf("plainRead(%q) = %t, want %t", q, got, want)
		}
	}
}

func TestJobWithoutWritesFinishesQuietly(t *testing.T) {
	b := deadBalancer(t)
	ctx, job := b.Begin(context.Background(), "u1", Write)
	if err := job.Finish(); err != nil {
		t.Errorf("a job that wrote nothing: %v", err)
	}
	observationFrom(ctx).wrote(true)
	if err := job.Finish(); !errors.Is(err, ErrUnconfirmed) {
		t.Errorf("a job whose write's outcome is unknown: %v, want ErrUnconfirmed", err)
	}
}

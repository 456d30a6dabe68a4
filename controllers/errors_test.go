package controllers

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"

	"github.com/ryw-go/ryw/middleware"
)

// The renderer must show a client only the errors in the table; anything
// else is logged with the request id and shown as a generic internal error.
func TestInternalErrorsAreLoggedNotLeaked(t *testing.T) {
	gin.SetMode(gin.TestMode)
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	r := gin.New()
	r.Use(Errors(logger), gin.CustomRecoveryWithWriter(nil, recovered), middleware.RequestID())
	r.GET("/fails", func(c *gin.Context) {
		fail(c, fmt.Errorf("query users: %w", errors.New(`pq: password authentication failed for user "app" at 10.0.0.7`)))
	})
	r.GET("/panics", func(c *gin.Context) { panic("nil map write in handler") })

	for _, path := range []string{"/fails", "/panics"} {
		logs.Reset()
		w := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.Header.Set("X-Request-Id", "req-42")
		r.ServeHTTP(w, req)

		var body ErrorBody
		if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
			t.Fatalf("%s: not the error shape: %s", path, w.Body)
		}
		if w.Code != http.StatusInternalServerError || body.Error.Code != "internal" {
			t.Errorf("%s = %d %+v; want 500 internal", path, w.Code, body)
		}
		for _, secret := range []string{"10.0.0.7", "password", "nil map"} {
			if strings.Contains(w.Body.String(), secret) {
				t.Errorf("%s leaks %q to the client: %s", path, secret, w.Body)
			}
		}
		if !strings.Contains(logs.String(), "requestId=req-42") || !strings.Contains(logs.String(), "level=ERROR") {
			t.Errorf("%s: the cause is not logged with the request id:\n%s", path, logs.String())
		}
	}
}

// A request shed by the admission limit, or a read shed by the router,
// answers 503 overloaded with Retry-After, in the error shape, and is not
// logged one by one (the metrics count them).
func TestShedRequestsAnswerOverloaded(t *testing.T) {
	gin.SetMode(gin.TestMode)
	var logs bytes.Buffer
	r := gin.New()
	r.Use(Errors(slog.New(slog.NewTextHandler(&logs, nil))))
	r.GET("/busy", func(c *gin.Context) { fail(c, fmt.Errorf("%w: waited 2s", middleware.ErrBusy)) })
	w := httptest.NewRecorder()
	r.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/busy", nil))
	var body ErrorBody
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
		t.Fatalf("not the error shape: %s", w.Body)
	}
	if w.Code != http.StatusServiceUnavailable || body.Error.Code != "overloaded" || w.Header().Get("Retry-After") != "1" {
		t.Errorf("shed request = %d %+v, Retry-After %q; want 503 overloaded, Retry-After 1", w.Code, body, w.Header().Get("Retry-After"))
	}
	if logs.Len() != 0 {
		t.Errorf("a shed request was logged:\n%s", logs.String())
	}
}

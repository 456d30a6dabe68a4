package devstack

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestLabGuards: the lab answers only requests that carry X-RYW-Lab, on a
// loopback Host, and allows only loopback pages to call it from a browser.
func TestLabGuards(t *testing.T) {
	h := (&Stack{}).LabHandler()
	for _, tt := range []struct {
		name, method, host, origin string
		header                     bool
		status                     int
		cors                       bool
	}{
		{"no lab header", http.MethodPost, "127.0.0.1:9", "", false, http.StatusForbidden, false},
		{"a rebound host name", http.MethodPost, "evil.example:9", "http://evil.example:9", true, http.StatusForbidden, false},
		{"preflight from the live page", http.MethodOptions, "127.0.0.1:9", "http://127.0.0.1:8080", false, http.StatusNoContent, true},
		{"preflight from localhost", http.MethodOptions, "127.0.0.1:9", "http://localhost:8080", false, http.StatusNoContent, true},
		{"preflight from another site", http.MethodOptions, "127.0.0.1:9", "https://evil.example", false, http.StatusNoContent, false},
		{"an unknown action", http.MethodPost, "127.0.0.1:9", "", true, http.StatusNotFound, false},
	} {
		req := httptest.NewRequest(tt.method, "http://"+tt.host+"/lab/redis/explode", nil)
		req.Host = tt.host
		if tt.origin != "" {
			req.Header.Set("Origin", tt.origin)
		}
		if tt.header {
			req.Header.Set(LabHeader, "1")
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != tt.status {
			t.Errorf("%s: %d %s; want %d", tt.name, w.Code, w.Body, tt.status)
		}
		if got := w.Header().Get("Access-Control-Allow-Origin") != ""; got != tt.cors {
			t.Errorf("%s: CORS allowed = %v, want %v", tt.name, got, tt.cors)
		}
	}
}

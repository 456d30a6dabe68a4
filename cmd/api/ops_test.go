package main

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/ryw-go/ryw/internal/devstack"
)

// accessLine returns the access-log line of the request with id, or "".
func accessLine(logs *devstack.Buffer, id string) string {
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "msg=request ") && strings.Contains(line, "requestId="+id) {
			return line
		}
	}
	return ""
}

// TestAccessLogRecordsTheFinalStatus: each refused request's access line
// says the status the client got, not the 200 a handler never wrote.
func TestAccessLogRecordsTheFinalStatus(t *testing.T) {
	api, logs := startRun(t, stackEnv(t))
	big := `{"email":"u@example.com","name":"` + strings.Repeat("a", 70_000) + `"}`
	tests := []struct {
		name, method, path, contentType, body string
		user                                  string
		status                                int
	}{
		{"bad user id", http.MethodGet, "/api/me", "", "", "not-a-uuid", http.StatusBadRequest},
		{"no profile", http.MethodGet, "/api/me", "", "", uuid.NewString(), http.StatusNotFound},
		{"body too large", http.MethodPost, "/api/me/profile", "application/json", big, uuid.NewString(), http.StatusRequestEntityTooLarge},
		{"not JSON", http.MethodPost, "/api/me/profile", "text/plain", "hello", uuid.NewString(), http.StatusUnsupportedMediaType},
		{"invalid field", http.MethodPost, "/api/me/profile", "application/json", `{"email":"nope","name":"n"}`, uuid.NewString(), http.StatusBadRequest},
		{"unknown route", http.MethodGet, "/nope", "", "", "", http.StatusNotFound},
	}
	for i, tt := range tests {
		id := fmt.Sprintf("access-%d-%s", i, uuid.NewString()[:8])
		r := do(t, tt.method, api+tt.path, uuid.Nil, tt.contentType, strings.NewReader(tt.body), func(req *http.Request) {
			req.Header.Set("X-Request-Id", id)
			if tt.user != "" {
				req.Header.Set("X-Demo-UserId", tt.user)
			}
		})
		if r.status != tt.status {
			t.Errorf("%s: got %d, want %d", tt.name, r.status, tt.status)
			continue
		}
		var line string
		waitFor(t, func() bool { line = accessLine(logs, id); return line != "" })
		if !strings.Contains(line, fmt.Sprintf("status=%d ", tt.status)) || !strings.Contains(line, "bytes=") {
			t.Errorf("%s: access line %q; want status=%d and the size", tt.name, line, tt.status)
		}
	}
}

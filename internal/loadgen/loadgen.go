// Package loadgen holds what the project's load tools (rywbench, rywchaos)
// share: the modes they may run, the API binary they run, and the one
// request a simulated user sends.
package loadgen

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"

	"github.com/google/uuid"

	"github.com/ryw-go/ryw/internal/devstack"
)

// ParseModes parses a comma-separated list of RYW_MODEs.
func ParseModes(list string) ([]string, error) {
	var modes []string
	for _, m := range strings.Split(list, ",") {
		if m != "time" && m != "lsn" && m != "off" {
			return nil, fmt.Errorf("-modes: %q is not time, lsn or off", m)
		}
		modes = append(modes, m)
	}
	return modes, nil
}

// APIBinary returns bin, or, when it is empty, builds ./cmd/api into a
// temporary directory that cleanup removes.
func APIBinary(ctx context.Context, bin, tool string, log io.Writer) (path string, cleanup func(), err error) {
	if bin != "" {
		return bin, func() {}, nil
	}
	dir, err := os.MkdirTemp("", tool+"-")
	if err != nil {
		return "", nil, err
	}
	fmt.Fprintf(log, "%s: building ./cmd/api\n", tool)
	if path, err = devstack.BuildAPI(ctx, dir, log); err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	return path, func() { os.RemoveAll(dir) }, nil
}

// Call sends one request as user (body "" for none) and returns the status,
// the response headers and, for a 200, the profile name in the body. The
// user is named by X-Demo-UserId (AUTH_MODE=demo).
func Call(ctx context.Context, client *http.Client, method, url string, user uuid.UUID, body string) (int, http.Header, string, error) {
	return CallAs(ctx, client, DemoIdentity, method, url, user, body)
}

// Identify makes a request come from user.
type Identify func(req *http.Request, user uuid.UUID) error

// DemoIdentity names the user in X-Demo-UserId.
func DemoIdentity(req *http.Request, user uuid.UUID) error {
	req.Header.Set("X-Demo-UserId", user.String())
	return nil
}

// CallAs is Call with the user identified by identify (a bearer token, for
// AUTH_MODE=jwt).
func CallAs(ctx context.Context, client *http.Client, identify Identify, method, url string, user uuid.UUID, body string) (int, http.Header, string, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		return 0, http.Header{}, "", err
	}
	if err := identify(req, user); err != nil {
		return 0, http.Header{}, "", err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, http.Header{}, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, resp.Header, "", err
	}
	var p struct {
		Name string `json:"name"`
	}
	if resp.StatusCode == http.StatusOK {
		_ = json.Unmarshal(b, &p)
	}
	return resp.StatusCode, resp.Header, p.Name, nil
}

// Median of xs (the mean of the middle two for an even count).
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

package main

// Browser tests of the live page and Swagger UI: headless Chromium driven
// by chromedp, against the API on the real stack. .ci/run installs the
// chromium package; elsewhere they are skipped when no Chromium is found.

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/google/uuid"
)

// chromium finds a Chromium or Chrome executable.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no chromium on PATH: .ci/run installs the chromium package")
	}
	t.Skip("no chromium on PATH (apt-get install chromium); the browser tests run in CI")
	return ""
}

// browser is a headless Chromium tab that records console errors and
// uncaught exceptions.
type browser struct {
	ctx    context.Context
	mu     sync.Mutex
	errors []string
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.NoSandbox, // CI runs as root
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1280, 1000),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelTab(); cancelAlloc() })
	// The first call starts the browser, and it lives as long as ctx.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	b := &browser{ctx: ctx}
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleException {
				b.mu.Lock()
				b.errors = append(b.errors, fmt.Sprintf("%s (%s): %s %s", m.Type, m.Source, m.Text, m.URL))
				b.mu.Unlock()
			}
		}
	}()
	return b
}

func (b *browser) do(t *testing.T, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatal(err)
	}
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](t *testing.T, b *browser, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitJS polls a JavaScript condition until it holds (30 s at most).
func (b *browser) waitJS(t *testing.T, what, cond string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !eval[bool](t, b, "Boolean("+cond+")") {
		if time.Now().After(deadline) {
			text := eval[string](t, b, "document.body.innerText")
			t.Fatalf("%s: not within 30s (%s)\npage:\n%.3000s", what, cond, text)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (b *browser) consoleErrors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errors...)
}

// livePage starts the API with devstack's lab served in-process, opens the
// page, and waits until it has drawn the replicas. Replicas the lab paused
// are resumed when the test ends.
func livePage(t *testing.T) (*browser, string) {
	t.Helper()
	lab := httptest.NewServer(stack.LabHandler())
	t.Cleanup(lab.Close)
	t.Cleanup(func() {
		for _, r := range stack.Replicas {
			_ = r.ResumeReplay(context.Background())
		}
	})
	api, _ := startRun(t, stackEnv(t, "RYW_LAB_URL="+lab.URL))
	b := newBrowser(t)
	b.do(t, chromedp.Navigate(api+"/"))
	b.waitJS(t, "the replicas drawn", `document.querySelectorAll(".replica").length === 2`)
	return b, api
}

// TestLivePageLoadsWithoutConsoleErrors: the page loads, polls, draws the
// replicas, the modes and the lab, and logs no error.
func TestLivePageLoadsWithoutConsoleErrors(t *testing.T) {
	b, api := livePage(t)
	b.waitJS(t, "three polls", "page.samples.length >= 3")
	b.waitJS(t, "the modes", `document.getElementById("modes").innerText.includes("RYW_MODE=time")`)
	b.waitJS(t, "the lab buttons", `document.getElementById("lab-pause-replica1") !== null`)
	// A read shows up in the routing table.
	saveProfile(t, api, uuid.New(), "someone")
	b.waitJS(t, "the write in the routing table", `document.querySelector('#decisions tr[data-reason="write"][data-node="primary"]') !== null`)
	if errs := b.consoleErrors(); len(errs) > 0 {
		t.Errorf("the page logged errors:\n%s", strings.Join(errs, "\n"))
	}
}

// TestLivePageShowsAPausedReplicasLagRising: the lab button pauses
// replica1's replay; with writes going on, the lag the page shows for it
// rises, and falls back once the other button resumes it.
func TestLivePageShowsAPausedReplicasLagRising(t *testing.T) {
	b, api := livePage(t)
	b.do(t, chromedp.Click(chromedp.ID("lab-pause-replica1")))
	b.waitJS(t, "the resume button", `document.getElementById("lab-resume-replica1") !== null`)
	if paused, err := stack.Replicas[0].ReplayPaused(t.Context()); err != nil || !paused {
		t.Fatalf("the pause button did not pause replica1: %v %v", paused, err)
	}
	user := uuid.New()
	lag := func() float64 {
		v, _ := strconv.ParseFloat(eval[string](t, b, `document.querySelector('.replica[data-name="replica1"]').dataset.lagSeconds`), 64)
		return v
	}
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; lag() < 1.5; i++ {
		saveProfile(t, api, user, fmt.Sprintf("v%d", i)) // WAL that replica1 does not replay
		if time.Now().After(deadline) {
			t.Fatalf("replica1's lag on the page stayed at %.1fs while paused", lag())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if other := eval[float64](t, b, `Number(document.querySelector('.replica[data-name="replica2"]').dataset.lagSeconds)`); other > 1 {
		t.Errorf("replica2 (not paused) shows %.1fs of lag", other)
	}
	b.do(t, chromedp.Click(chromedp.ID("lab-resume-replica1")))
	b.waitJS(t, "the lag back to 0", `Number(document.querySelector('.replica[data-name="replica1"]').dataset.lagSeconds) === 0`)
}

// TestTryItShowsTheFixAndTheBug: with every replica's replay paused (so
// that staleness is certain, not luck), the panel's reads with
// read-your-writes are all fresh, and the same reads with X-RYW-Mode: off
// are stale: the control, in the same run.
func TestTryItShowsTheFixAndTheBug(t *testing.T) {
	demoOnly(t) // X-RYW-Mode: off is refused in jwt mode, and the panel wants a token there
	b, _ := livePage(t)
	for _, r := range []string{"replica1", "replica2"} {
		b.waitJS(t, "the pause button", fmt.Sprintf(`document.getElementById("lab-pause-%s") !== null`, r))
		b.do(t, chromedp.Click(chromedp.ID("lab-pause-"+r)))
		b.waitJS(t, "the resume button", fmt.Sprintf(`document.getElementById("lab-resume-%s") !== null`, r))
	}
	b.do(t,
		chromedp.SetValue(chromedp.ID("try-reads"), "5"),
		chromedp.Click(chromedp.ID("try-run")),
	)
	b.waitJS(t, "both columns done", `document.getElementById("summary-on").dataset.fresh !== undefined && document.getElementById("summary-off").dataset.fresh !== undefined`)
	type summary struct{ Fresh, Stale string }
	on := eval[summary](t, b, `({Fresh: document.getElementById("summary-on").dataset.fresh, Stale: document.getElementById("summary-on").dataset.stale})`)
	off := eval[summary](t, b, `({Fresh: document.getElementById("summary-off").dataset.fresh, Stale: document.getElementById("summary-off").dataset.stale})`)
	if on.Fresh != "5" || on.Stale != "0" {
		t.Errorf("with read-your-writes: %s fresh, %s stale; want 5 and 0", on.Fresh, on.Stale)
	}
	if off.Stale == "0" {
		t.Errorf("with X-RYW-Mode: off and every replica paused: %s fresh, %s stale; want stale reads (the control)", off.Fresh, off.Stale)
	}
	servedOff := eval[string](t, b, `[...document.querySelectorAll("#reads-off li[data-verdict=stale]")].map(li => li.dataset.servedBy).join(",")`)
	if !strings.Contains(servedOff, "replica") {
		t.Errorf("the stale reads were served by %q; want replicas", servedOff)
	}
	if dir := os.Getenv("RYW_SCREENSHOT_DIR"); dir != "" {
		// For the README's picture: the reads in the routing table, and
		// the paused replicas' lag on the page.
		b.waitJS(t, "the reads in the routing table", `document.querySelector('#decisions tr[data-reason="ryw-off"]') !== null`)
		b.waitJS(t, "the lag", `Number(document.querySelector('.replica[data-name="replica1"]').dataset.lagSeconds) > 2`)
		png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "live-page.png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A stale read of a user the paused replicas have never seen is a 404,
	// which the browser logs as a failed load: that is the bug on show.
	// Anything else is an error of the page.
	var errs []string
	for _, e := range b.consoleErrors() {
		if !(strings.Contains(e, "(network)") && strings.Contains(e, "404") && strings.HasSuffix(e, "/api/me")) {
			errs = append(errs, e)
		}
	}
	if len(errs) > 0 {
		t.Errorf("the page logged errors:\n%s", strings.Join(errs, "\n"))
	}
}

// TestSwaggerUIRendersTheAPIOperations: Swagger UI, reached at /swagger,
// renders the three /api operations.
func TestSwaggerUIRendersTheAPIOperations(t *testing.T) {
	api, _ := startRun(t, stackEnv(t))
	b := newBrowser(t)
	b.do(t, chromedp.Navigate(api+"/swagger"))
	b.waitJS(t, "the operations", `document.querySelectorAll(".opblock").length >= 3`)
	paths := eval[string](t, b, `[...document.querySelectorAll(".opblock")].map(o => (o.querySelector(".opblock-summary-method")||{}).innerText + " " + (o.querySelector(".opblock-summary-path")||{}).innerText).join("\n")`)
	for _, want := range []string{"GET /api/me", "POST /api/me/profile", "GET /api/products"} {
		if !strings.Contains(strings.ReplaceAll(paths, "\u200b", ""), want) {
			t.Errorf("Swagger UI lacks %s; it shows:\n%s", want, paths)
		}
	}
	if !eval[bool](t, b, `document.querySelector(".btn.authorize") !== null`) {
		t.Error("Swagger UI has no Authorize button")
	}
}

// TestLivePageCanBeTurnedOff: with LIVE_PAGE=false, / and /ui/state are
// not served (their figures are /metrics's, which a deployment may keep
// private).
func TestLivePageCanBeTurnedOff(t *testing.T) {
	api, _ := startRun(t, stackEnv(t, "LIVE_PAGE=false"))
	for _, path := range []string{"/", "/ui/state", "/ui/static/app.js"} {
		if r := do(t, http.MethodGet, api+path, uuid.Nil, "", nil); r.status != http.StatusNotFound {
			t.Errorf("GET %s with LIVE_PAGE=false = %s; want 404", path, r)
		}
	}
	api2, _ := startRun(t, stackEnv(t))
	if r := do(t, http.MethodGet, api2+"/", uuid.Nil, "", nil); r.status != http.StatusOK || !strings.Contains(string(r.body), "Try it") {
		t.Errorf("GET / by default = %d; want the page", r.status)
	}
}

// TestSwaggerUIAuthorizeWorksWithABearerToken: in jwt mode, Swagger UI's
// Authorize dialog takes "Bearer <token>", and Try it out on GET /api/me
// then answers as that user.
func TestSwaggerUIAuthorizeWorksWithABearerToken(t *testing.T) {
	api, _ := startRun(t, stackEnv(t, jwtEnv()...))
	user := uuid.New()
	tok, err := testIssuer.Mint(user.String(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if r := do(t, http.MethodPost, api+"/api/me/profile", uuid.Nil, "application/json", strings.NewReader(`{"email":"sw@example.com","name":"Swagger User"}`), bearer(tok)); r.status != http.StatusOK {
		t.Fatalf("save = %s", r)
	}
	b := newBrowser(t)
	b.do(t, chromedp.Navigate(api+"/swagger/index.html"))
	b.waitJS(t, "the Authorize button", `document.querySelector(".btn.authorize") !== null`)
	b.do(t, chromedp.Click(chromedp.CSS(".btn.authorize")))
	b.waitJS(t, "the dialog", `document.querySelectorAll(".modal-ux .auth-container").length >= 2`)
	// The BearerAuth scheme's input: the container whose text names it.
	idx := eval[int](t, b, `[...document.querySelectorAll(".modal-ux .auth-container")].findIndex(c => c.innerText.includes("BearerAuth"))`)
	if idx < 0 {
		t.Fatal("the Authorize dialog has no BearerAuth scheme")
	}
	sel := fmt.Sprintf(`.modal-ux .auth-container:nth-of-type(%d) input`, idx+1)
	b.waitJS(t, "the BearerAuth input", fmt.Sprintf(`document.querySelector(%q) !== null`, sel))
	b.do(t,
		chromedp.SendKeys(chromedp.CSS(sel), "Bearer "+tok),
		chromedp.Click(chromedp.CSS(fmt.Sprintf(`.modal-ux .auth-container:nth-of-type(%d) button.authorize`, idx+1))),
		chromedp.Click(chromedp.CSS(".modal-ux .btn-done")),
	)
	// Try GET /api/me.
	b.waitJS(t, "the operation", `document.querySelector("#operations-me-get_api_me") !== null`)
	b.do(t, chromedp.Click(chromedp.CSS("#operations-me-get_api_me .opblock-summary")))
	b.waitJS(t, "Try it out", `document.querySelector("#operations-me-get_api_me .try-out__btn") !== null`)
	b.do(t, chromedp.Click(chromedp.CSS("#operations-me-get_api_me .try-out__btn")))
	b.waitJS(t, "Execute", `document.querySelector("#operations-me-get_api_me .execute") !== null`)
	b.do(t, chromedp.Click(chromedp.CSS("#operations-me-get_api_me .execute")))
	b.waitJS(t, "the response", `document.querySelector("#operations-me-get_api_me .live-responses-table tbody .response-col_status") !== null`)
	status := eval[string](t, b, `document.querySelector("#operations-me-get_api_me .live-responses-table tbody .response-col_status").innerText`)
	body := eval[string](t, b, `document.querySelector("#operations-me-get_api_me .live-responses-table tbody .response-col_description").innerText`)
	if !strings.Contains(status, "200") || !strings.Contains(body, "Swagger User") {
		t.Errorf("Try it out after Authorize: %q %.300q; want 200 with the user's profile", status, body)
	}
}

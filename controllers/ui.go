package controllers

import (
	"context"
	"crypto/rand"
	"io/fs"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/ryw-go/ryw/ryw"
)

// UIInfo is what the live page says about this service.
type UIInfo struct {
	// Instance identifies this process: behind a load balancer, the page
	// starts its history again when another instance answers.
	Instance string `json:"instance"`
	Mode     string `json:"mode"`   // RYW_MODE
	Auth     string `json:"auth"`   // AUTH_MODE
	Window   string `json:"window"` // RYW_WINDOW
	// ModeOverride: X-RYW-Mode: off is honoured (demo mode only).
	ModeOverride bool `json:"modeOverride"`
	// LabURL is devstack's lab, when there is one: the page shows its
	// buttons.
	LabURL string `json:"labUrl,omitempty"`
}

// UISample is the state of the replicas and the routing at one moment.
type UISample struct {
	T        int64             `json:"t"` // Unix milliseconds
	Replicas []UIReplicaSample `json:"replicas"`
	// Decisions counts the routing decisions since start, by reason, then
	// node: the page shows the differences between samples.
	Decisions map[ryw.Reason]map[string]uint64 `json:"decisions"`
}

// UIReplicaSample is one replica in a sample.
type UIReplicaSample struct {
	Name       string  `json:"name"`
	Healthy    bool    `json:"healthy"`
	LagBytes   uint64  `json:"lagBytes"`
	LagSeconds float64 `json:"lagSeconds"`
}

// UIState is the body of GET /ui/state.
type UIState struct {
	UIInfo
	Samples []UISample `json:"samples"`
}

// UIController serves the live page at / and the state it polls: the
// replicas' lag and health and the routing decisions, sampled every
// second over the last five minutes, so that the page has a history the
// moment it opens.
type UIController struct {
	info    UIInfo
	files   http.Handler
	index   []byte
	status  func() []ryw.ReplicaStatus
	counts  func() ryw.CountsSnapshot
	every   time.Duration
	keep    int
	mu      sync.Mutex
	samples []UISample
}

// NewUIController builds the controller over the page's files (web.Files)
// and the monitor's and router's views.
func NewUIController(info UIInfo, files fs.FS, status func() []ryw.ReplicaStatus, counts func() ryw.CountsSnapshot) (*UIController, error) {
	index, err := fs.ReadFile(files, "index.html")
	if err != nil {
		return nil, err
	}
	if info.Instance == "" {
		info.Instance = rand.Text()[:12]
	}
	return &UIController{
		info: info, files: http.StripPrefix("/ui/static/", http.FileServerFS(files)), index: index,
		status: status, counts: counts, every: time.Second, keep: 300,
	}, nil
}

// Run samples until ctx ends.
func (u *UIController) Run(ctx context.Context) {
	t := time.NewTicker(u.every)
	defer t.Stop()
	for {
		u.sample(time.Now())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (u *UIController) sample(now time.Time) {
	s := UISample{T: now.UnixMilli(), Decisions: u.counts().Decisions}
	for _, st := range u.status() {
		s.Replicas = append(s.Replicas, UIReplicaSample{Name: st.Name, Healthy: st.Healthy, LagBytes: st.LagBytes, LagSeconds: st.LagSeconds})
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.samples = append(u.samples, s)
	if len(u.samples) > u.keep {
		u.samples = append(u.samples[:0], u.samples[len(u.samples)-u.keep:]...)
	}
}

// Page serves the live page.
func (u *UIController) Page(c *gin.Context) {
	c.Header("Cache-Control", "no-cache")
	c.Data(http.StatusOK, "text/html; charset=utf-8", u.index)
}

// Files serves the page's scripts and styles under /ui/static/.
func (u *UIController) Files(c *gin.Context) {
	c.Header("Cache-Control", "no-cache")
	u.files.ServeHTTP(c.Writer, c.Request)
}

// State godoc
//
//	@Summary		What the live page shows
//	@Description	The service's modes, devstack's lab URL when there is one, and samples (one a second, the last five minutes) of each replica's lag and health and of the routing decisions by reason and node (counts since start). since (Unix milliseconds) returns only newer samples.
//	@Tags			ui
//	@Produce		json
//	@Param			since	query		int	false	"only samples after this time, in Unix milliseconds"
//	@Success		200		{object}	UIState
//	@Failure		400		{object}	ErrorBody	"since is not a number"
//	@Router			/ui/state [get]
func (u *UIController) State(c *gin.Context) {
	var since int64
	if s := c.Query("since"); s != "" {
		var err error
		if since, err = strconv.ParseInt(s, 10, 64); err != nil {
			fail(c, errorf(http.StatusBadRequest, "invalid_since", "since must be a time in Unix milliseconds, got %q", s))
			return
		}
	}
	out := UIState{UIInfo: u.info, Samples: []UISample{}}
	u.mu.Lock()
	for _, s := range u.samples {
		if s.T > since {
			out.Samples = append(out.Samples, s)
		}
	}
	u.mu.Unlock()
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, out)
}

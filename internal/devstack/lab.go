package devstack

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// LabHeader must be on every lab request. A browser sends a custom header
// only after a CORS preflight, which the lab answers only for pages served
// from loopback (the API's live page), so another web site open in the
// same browser cannot pause the stack's replicas.
const LabHeader = "X-RYW-Lab"

// LabState is what GET /lab/state answers.
type LabState struct {
	Primary  string       `json:"primary"` // its name: "primary", or the replica promoted by a failover
	Replicas []LabReplica `json:"replicas"`
	Redis    bool         `json:"redisRunning"`
}

// LabReplica is one replica as the lab sees it.
type LabReplica struct {
	Name   string `json:"name"`
	Paused bool   `json:"paused"`
}

// LabHandler serves the lab: what the live page's lab buttons do to this
// stack, for a newcomer to make the stale read happen on purpose.
//
//	GET  /lab/state                     replicas (paused or not) and Redis
//	POST /lab/replicas/{name}/pause     pg_wal_replay_pause(), waits until paused
//	POST /lab/replicas/{name}/resume    pg_wal_replay_resume()
//	POST /lab/redis/stop                stop Redis (its keys survive in its dump only if saved)
//	POST /lab/redis/start               start Redis again
//	POST /lab/failover                  kill the primary, promote the first replica, re-point the others (Failover)
//
// Every request needs the X-RYW-Lab header; pages served from loopback
// may call it from a browser (CORS). It is for loopback only: devstack
// serves it there.
func (s *Stack) LabHandler() http.Handler {
	mux := http.NewServeMux()
	var one sync.Mutex // one lab action at a time: a failover changes the stack's nodes
	replica := func(name string) *Node {
		for _, r := range s.Replicas {
			if r.Name == name {
				return r
			}
		}
		return nil
	}
	mux.HandleFunc("GET /lab/state", func(w http.ResponseWriter, r *http.Request) {
		one.Lock()
		defer one.Unlock()
		st := LabState{Primary: s.Primary.Name, Replicas: []LabReplica{}, Redis: s.Redis.Running()}
		for _, n := range s.Replicas {
			paused, _ := n.ReplayPaused(r.Context())
			st.Replicas = append(st.Replicas, LabReplica{Name: n.Name, Paused: paused})
		}
		labJSON(w, http.StatusOK, st)
	})
	mux.HandleFunc("POST /lab/failover", func(w http.ResponseWriter, r *http.Request) {
		one.Lock()
		defer one.Unlock()
		ctx, cancel := context.WithTimeout(r.Context(), 90*time.Second)
		defer cancel()
		_, err := s.Failover(ctx)
		labDone(w, err)
	})
	mux.HandleFunc("POST /lab/replicas/{name}/{action}", func(w http.ResponseWriter, r *http.Request) {
		one.Lock()
		defer one.Unlock()
		n := replica(r.PathValue("name"))
		if n == nil {
			labJSON(w, http.StatusNotFound, map[string]string{"error": "no replica " + r.PathValue("name")})
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		var err error
		switch r.PathValue("action") {
		case "pause":
			err = n.PauseReplay(ctx)
		case "resume":
			err = n.ResumeReplay(ctx)
		default:
			labJSON(w, http.StatusNotFound, map[string]string{"error": "actions are pause and resume"})
			return
		}
		labDone(w, err)
	})
	mux.HandleFunc("POST /lab/redis/{action}", func(w http.ResponseWriter, r *http.Request) {
		one.Lock()
		defer one.Unlock()
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		defer cancel()
		var err error
		switch r.PathValue("action") {
		case "stop":
			err = s.Redis.Stop(ctx)
		case "start":
			if !s.Redis.Running() {
				err = s.Redis.Start(ctx)
			}
		default:
			labJSON(w, http.StatusNotFound, map[string]string{"error": "actions are stop and start"})
			return
		}
		labDone(w, err)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Vary", "Origin")
		// A loopback Host only: a name that resolves to 127.0.0.1 (DNS
		// rebinding) does not make another site's page a loopback one.
		if !loopbackOrigin("http://" + r.Host) {
			labJSON(w, http.StatusForbidden, map[string]string{"error": "the lab answers on loopback addresses only"})
			return
		}
		origin := r.Header.Get("Origin")
		if loopbackOrigin(origin) {
			w.Header().Set("Access-Control-Allow-Origin", origin)
			w.Header().Set("Access-Control-Allow-Methods", "GET, POST")
			w.Header().Set("Access-Control-Allow-Headers", LabHeader)
		}
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if r.Header.Get(LabHeader) == "" {
			labJSON(w, http.StatusForbidden, map[string]string{"error": "lab requests need the " + LabHeader + " header"})
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// loopbackOrigin says whether origin is a page served from this machine.
func loopbackOrigin(origin string) bool {
	u, err := url.Parse(origin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return false
	}
	return isLoopbackHost(u.Hostname())
}

func labDone(w http.ResponseWriter, err error) {
	if err != nil {
		labJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	labJSON(w, http.StatusOK, map[string]string{"status": "done"})
}

func labJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// ServeLab serves LabHandler on addr (loopback only; port 0 picks a free
// port) until the stack closes, and returns its URL.
func (s *Stack) ServeLab(addr string) (string, error) {
	ln, err := listenLoopback(addr, "lab", "the lab stops databases on request")
	if err != nil {
		return "", err
	}
	s.serve(ln, s.LabHandler(), "lab")
	u := "http://" + ln.Addr().String()
	s.mu.Lock()
	s.labURL = u
	s.mu.Unlock()
	return u, nil
}

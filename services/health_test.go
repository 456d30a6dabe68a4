package services

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ryw-go/ryw/ryw"
)

func probe(name string, err error) Probe {
	return Probe{Name: name, Check: func(context.Context) error { return err }}
}

func TestHealthStatus(t *testing.T) {
	down := errors.New("connection refused")
	tests := []struct {
		name                string
		primary, redis, rep error
		want                string
	}{
		{"all up", nil, nil, nil, StatusReady},
		{"replica down", nil, nil, down, StatusDegraded},
		{"redis down", nil, down, nil, StatusDegraded},
		{"primary down", down, nil, nil, StatusUnavailable},
		{"everything down", down, down, down, StatusUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := NewHealth(probe("primary", tt.primary), []Probe{probe("replica1", nil), probe("replica2", tt.rep)}, probe("redis", tt.redis), time.Second).WithDetails(true)
			r := h.Check(t.Context())
			if r.Status != tt.want {
				t.Errorf("status = %q, want %q", r.Status, tt.want)
			}
			if r.Primary.Name != "primary" || r.Redis.Name != "redis" || len(r.Replicas) != 2 || r.Replicas[1].Name != "replica2" {
				t.Fatalf("components misnamed: %+v", r)
			}
			if r.Replicas[1].Up != (tt.rep == nil) || (tt.rep != nil && r.Replicas[1].Error != down.Error()) {
				t.Errorf("replica2 = %+v", r.Replicas[1])
			}
		})
	}
}

func TestHealthProbeTimesOut(t *testing.T) {
	hang := Probe{Name: "primary", Check: func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }}
	h := NewHealth(hang, nil, probe("redis", nil), 20*time.Millisecond).WithDetails(true)
	r := h.Check(t.Context())
	if r.Status != StatusUnavailable || r.Primary.Up || r.Primary.Error != context.DeadlineExceeded.Error() {
		t.Errorf("a hanging primary gave %+v", r)
	}
	if r.Replicas == nil || len(r.Replicas) != 0 {
		t.Errorf("no replicas should report an empty list, got %#v", r.Replicas)
	}
}

func TestHealthHidesErrorsWithoutDetails(t *testing.T) {
	down := probe("primary", errors.New("dial tcp 10.0.0.5:5432: connection refused"))
	r := NewHealth(down, nil, probe("redis", nil), time.Second).Check(t.Context())
	if r.Primary.Up || r.Primary.Error != "" || r.Status != StatusUnavailable {
		t.Errorf("without details: %+v; want the primary down, without its error text", r.Primary)
	}
}

type primaryView struct{ historyErr string }

func (p primaryView) Primary() ryw.PrimaryStatus {
	return ryw.PrimaryStatus{Timeline: 1, HistoryError: p.historyErr}
}

// TestHealthWarnsOfAnUnreadableTimelineHistory: a role that may not read
// the timeline history costs guarantees only after a failover, so the
// status stays ready; the warning says so, with or without details, and
// its cause only with them. Control: no warning when it can be read.
func TestHealthWarnsOfAnUnreadableTimelineHistory(t *testing.T) {
	cause := ryw.ErrHistoryNotGranted.Error()
	for _, tt := range []struct {
		name       string
		historyErr string
		details    bool
		want       []Warning
	}{
		{"readable", "", true, nil},
		{"not granted, details", cause, true, []Warning{{Code: WarnTimelineHistory, Message: timelineHistoryMessage, Error: cause}}},
		{"not granted, public", cause, false, []Warning{{Code: WarnTimelineHistory, Message: timelineHistoryMessage}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := NewHealth(probe("primary", nil), nil, probe("redis", nil), time.Second).
				WithPrimary(primaryView{tt.historyErr}).WithDetails(tt.details)
			r := h.Check(t.Context())
			if r.Status != StatusReady {
				t.Errorf("status = %q; want ready: the service works", r.Status)
			}
			if !reflect.DeepEqual(r.Warnings, tt.want) {
				t.Errorf("warnings = %+v; want %+v", r.Warnings, tt.want)
			}
		})
	}
	if !strings.Contains(timelineHistoryMessage, "EXECUTE on pg_read_file(text)") {
		t.Errorf("the message does not name the grant: %q", timelineHistoryMessage)
	}
}

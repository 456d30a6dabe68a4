package proccpu

import (
	"os"
	"testing"
	"time"
)

func TestMeterCountsARestartedProcessFromItsStart(t *testing.T) {
	// Samples are fed by hand: pid 1 runs from before the meter started,
	// is killed, and pid 2 takes its place.
	cpu := map[int]time.Duration{1: 5 * time.Second}
	m := newMeter(func(pid int, _ bool) (time.Duration, error) {
		c, ok := cpu[pid]
		if !ok {
			return 0, os.ErrNotExist
		}
		return c, nil
	})
	pid := 1
	m.Watch("db", func() []int { return []int{pid} }, true)
	m.sample() // the baseline: the 5 s before the run are not counted
	cpu[1] = 7 * time.Second
	m.sample()
	delete(cpu, 1) // killed; what it used since the last sample is lost
	pid = 2
	cpu[2] = 300 * time.Millisecond
	m.sample()
	cpu[2] = time.Second
	m.sample()
	// A backend exited and its parent has not reaped it yet: its time is
	// missing from the parent's for a sample, then back.
	cpu[2] = 900 * time.Millisecond
	m.sample()
	cpu[2] = 1100 * time.Millisecond
	m.sample()
	if got, want := m.Used()["db"], 3100*time.Millisecond; got != want {
		t.Errorf("Used = %v; want %v (2 s of the first process, 1.1 s of the one that replaced it)", got, want)
	}
}

func TestMeterReadsRealProcesses(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	m := NewMeter()
	m.Watch("self", func() []int { return []int{os.Getpid()} }, false)
	m.Start(time.Millisecond)
	for end := time.Now().Add(50 * time.Millisecond); time.Now().Before(end); {
	}
	m.Stop()
	if m.Used()["self"] <= 0 {
		t.Errorf("Used = %v after 50 ms of spinning; want some CPU time", m.Used())
	}
}

func TestMachineCountsThisProcessesWork(t *testing.T) {
	if _, err := os.Stat("/proc/stat"); err != nil {
		t.Skip("no /proc")
	}
	before, err := Machine()
	if err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(100 * time.Millisecond); time.Now().Before(end); {
	}
	after, err := Machine()
	if err != nil {
		t.Fatal(err)
	}
	d := after.Sub(before)
	if d.Busy <= 0 {
		t.Errorf("busy %v after 100 ms of spinning; want some", d.Busy)
	}
	if d.Idle < 0 || d.Steal < 0 {
		t.Errorf("idle %v, steal %v: a count went backwards", d.Idle, d.Steal)
	}
}

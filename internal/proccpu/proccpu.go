// Package proccpu reads the CPU time that processes have used, from
// /proc, for the benchmarks' CPU per request, samples groups of
// processes that may be killed and restarted during a run (Meter), and
// reads what the whole machine's CPUs did (Machine): busy, idle, or
// stolen by the hypervisor.
package proccpu

import (
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/procfs"
)

// clockTicks is USER_HZ, the unit of the CPU times in /proc/<pid>/stat: 100
// on every Linux architecture Go supports (procfs assumes it too).
const clockTicks = 100

// Of is the CPU time, user plus system, that a process has used. With
// children set it also counts its live children and the ones it has
// reaped: a postmaster and its backends.
func Of(pid int, children bool) (time.Duration, error) {
	if pid == 0 {
		return 0, fmt.Errorf("process is not running")
	}
	p, err := procfs.NewProc(pid)
	if err != nil {
		return 0, err
	}
	st, err := p.Stat()
	if err != nil {
		return 0, err
	}
	ticks := int64(st.UTime) + int64(st.STime)
	if children {
		ticks += int64(st.CUTime) + int64(st.CSTime)
		all, err := procfs.AllProcs()
		if err != nil {
			return 0, err
		}
		for _, k := range all {
			if k.PID == pid {
				continue
			}
			ks, err := k.Stat()
			if err != nil || ks.PPID != pid {
				continue // it exited while we looked, or is not a child
			}
			ticks += int64(ks.UTime) + int64(ks.STime)
		}
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// Self is this process's CPU time: the load generator's.
func Self() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// MachineUse is what every CPU of the machine has done since boot, from
// /proc/stat: busy (user, system and interrupts), idle (idle and iowait),
// and stolen, the time the hypervisor ran something else while this
// machine wanted to run. Take one before and one after a phase and Sub
// them.
type MachineUse struct{ Busy, Idle, Steal time.Duration }

// Machine reads the machine's CPU use from /proc/stat.
func Machine() (MachineUse, error) {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return MachineUse{}, err
	}
	st, err := fs.Stat()
	if err != nil {
		return MachineUse{}, err
	}
	c := st.CPUTotal
	sec := func(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
	return MachineUse{
		Busy:  sec(c.User + c.Nice + c.System + c.IRQ + c.SoftIRQ),
		Idle:  sec(c.Idle + c.Iowait),
		Steal: sec(c.Steal),
	}, nil
}

// Sub is what the machine did between o and m.
func (m MachineUse) Sub(o MachineUse) MachineUse {
	return MachineUse{m.Busy - o.Busy, m.Idle - o.Idle, m.Steal - o.Steal}
}

// Meter sums the CPU time of groups of processes over a run in which
// some of them are killed and restarted: it samples each process every
// interval, counts what a process used since its last sample, and counts
// a process first seen after Start from its start. What a killed process
// used after its last sample is not counted.
type Meter struct {
	read   func(pid int, children bool) (time.Duration, error)
	mu     sync.Mutex
	groups []*group
	stop   chan struct{}
	done   chan struct{}
	primed bool
}

type group struct {
	name     string
	pids     func() []int
	children bool
	last     map[int]time.Duration
	used     time.Duration
}

// NewMeter returns a Meter of processes read from /proc.
func NewMeter() *Meter { return newMeter(Of) }

func newMeter(read func(int, bool) (time.Duration, error)) *Meter {
	return &Meter{read: read}
}

// Watch adds a group: the processes pids returns at each sample (0s are
// skipped), with their children when children is set (a postmaster and
// its backends).
func (m *Meter) Watch(name string, pids func() []int, children bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.groups = append(m.groups, &group{name: name, pids: pids, children: children, last: map[int]time.Duration{}})
}

// Start takes the baseline sample, then samples every interval until
// Stop.
func (m *Meter) Start(interval time.Duration) {
	m.sample()
	m.stop, m.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(m.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-m.stop:
				return
			case <-t.C:
				m.sample()
			}
		}
	}()
}

// Stop takes a last sample and ends the sampling.
func (m *Meter) Stop() {
	close(m.stop)
	<-m.done
	m.sample()
}

// Used is each group's CPU time between Start and Stop.
func (m *Meter) Used() map[string]time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]time.Duration{}
	for _, g := range m.groups {
		out[g.name] = g.used
	}
	return out
}

func (m *Meter) sample() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, g := range m.groups {
		for _, pid := range g.pids() {
			if pid == 0 {
				continue
			}
			c, err := m.read(pid, g.children)
			if err != nil {
				continue // not running now
			}
			last, seen := g.last[pid]
			switch {
			case !seen && !m.primed:
				// Running before the run began: only what it uses from
				// now on counts.
			case c > last:
				g.used += c - last
			default:
				// A child that exited and is not reaped yet is in
				// neither count for a moment: its time comes back once it
				// is, and is not to be counted twice.
				continue
			}
			g.last[pid] = c
		}
	}
	m.primed = true
}

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of the CPU times in /proc/<pid>/stat: 100
// on every Linux architecture Go supports.
const clockTicks = 100

// procCPU is the CPU time, user plus system, that a process has used. With
// children set it also counts its live children and the ones it has
// reaped: a postmaster and its backends.
func procCPU(pid int, children bool) (time.Duration, error) {
	if pid == 0 {
		return 0, fmt.Errorf("process is not running")
	}
	f, err := readStat(pid)
	if err != nil {
		return 0, err
	}
	ticks := f.utime + f.stime
	if children {
		ticks += f.cutime + f.cstime
		kids, err := childrenOf(pid)
		if err != nil {
			return 0, err
		}
		for _, k := range kids {
			ticks += k.utime + k.stime
		}
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// selfCPU is this process's CPU time: the load generator's.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type statFields struct {
	ppid                         int
	utime, stime, cutime, cstime int64
}

func readStat(pid int) (statFields, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return statFields{}, err
	}
	return parseStat(string(b))
}

// parseStat reads /proc/<pid>/stat. The command name, in parentheses, may
// hold spaces and parentheses itself, so fields are counted from the last
// ')'.
func parseStat(s string) (statFields, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return statFields{}, fmt.Errorf("malformed stat %q", s)
	}
	// After ") ": state(3) ppid(4) ... utime(14) stime(15) cutime(16) cstime(17).
	f := strings.Fields(s[i+1:])
	if len(f) < 15 {
		return statFields{}, fmt.Errorf("malformed stat %q", s)
	}
	var st statFields
	var err error
	num := func(k int) int64 {
		n, e := strconv.ParseInt(f[k], 10, 64)
		if e != nil && err == nil {
			err = fmt.Errorf("stat field %d: %w", k+3, e)
		}
		return n
	}
	st.ppid = int(num(1))
	st.utime, st.stime, st.cutime, st.cstime = num(11), num(12), num(13), num(14)
	return st, err
}

// childrenOf lists the stat fields of pid's live children.
func childrenOf(pid int) ([]statFields, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var out []statFields
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err != nil || n == pid {
			continue
		}
		st, err := readStat(n)
		if err != nil {
			continue // it exited while we looked
		}
		if st.ppid == pid {
			out = append(out, st)
		}
	}
	return out, nil
}

package devstack

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"
)

// RunTests is a test package's TestMain around one shared stack: it starts
// the stack, points *s at it, runs the tests and stops it, and returns the
// exit code:
//
//	func TestMain(m *testing.M) { os.Exit(devstack.RunTests(m, devstack.Options{Replicas: 2}, &stack)) }
func RunTests(m *testing.M, opts Options, s **Stack) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	st, err := Start(ctx, opts)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "start devstack:", err)
		return 1
	}
	*s = st
	code := m.Run()
	if err := st.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "close devstack:", err)
		code = 1
	}
	return code
}

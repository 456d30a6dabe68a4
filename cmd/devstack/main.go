// Command devstack runs the whole ryw stack on this machine with one
// command and no Docker: a real PostgreSQL primary, streaming replicas
// (the last one delayed, so lag is visible), Redis, and the API, on
// loopback. It prints the URLs, then "ready"; Ctrl-C stops everything and
// removes every file it made.
//
// Usage:
//
//	devstack [-replicas 2] [-replica-delay 2s] [-mode time|lsn|off]
//	         [-addr 127.0.0.1:8080] [-instances 1] [-state FILE] [-api-bin PATH]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/ryw-go/ryw/internal/devstack"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		switch {
		case errors.Is(err, flag.ErrHelp):
			os.Exit(0)
		case ctx.Err() != nil:
			fmt.Fprintln(os.Stderr, "devstack: interrupted during start-up; everything started was stopped")
			os.Exit(130)
		}
		fmt.Fprintln(os.Stderr, "devstack:", err)
		os.Exit(1)
	}
}

type options struct {
	replicas     int
	replicaDelay time.Duration
	mode         string
	addr         string
	instances    int
	state        string
	apiBin       string
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("devstack", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.replicas, "replicas", 2, "number of streaming replicas")
	fs.DurationVar(&o.replicaDelay, "replica-delay", 2*time.Second, "recovery_min_apply_delay of the last replica, so lag is visible (0 disables)")
	fs.StringVar(&o.mode, "mode", envOr("RYW_MODE", "time"), "read-your-writes mode of the API: time, lsn or off")
	fs.StringVar(&o.addr, "addr", "127.0.0.1:8080", "address of the first API instance; the others take the next ports (port 0: free ports)")
	fs.IntVar(&o.instances, "instances", 1, "number of API processes")
	fs.StringVar(&o.state, "state", "", "write the stack's URLs as JSON to this file once ready (removed on exit)")
	fs.StringVar(&o.apiBin, "api-bin", "", "API executable to run (default: go build ./cmd/api from this checkout)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	case o.replicas < 0:
		return o, fmt.Errorf("-replicas must be >= 0, got %d", o.replicas)
	case o.replicaDelay < 0:
		return o, fmt.Errorf("-replica-delay must be >= 0, got %s", o.replicaDelay)
	case o.mode != "time" && o.mode != "lsn" && o.mode != "off":
		return o, fmt.Errorf("-mode must be time, lsn or off, got %q", o.mode)
	case o.instances < 1:
		return o, fmt.Errorf("-instances must be >= 1, got %d", o.instances)
	}
	return o, nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if o.apiBin == "" {
		dir, err := os.MkdirTemp("", "ryw-api-build-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		fmt.Fprintln(stderr, "devstack: building ./cmd/api")
		if o.apiBin, err = devstack.BuildAPI(ctx, dir, stderr); err != nil {
			return err
		}
	}

	fmt.Fprintf(stderr, "devstack: starting a primary, %d replica(s) and Redis\n", o.replicas)
	stack, err := devstack.Start(ctx, devstack.Options{
		Replicas: o.replicas, ReplicaDelay: o.replicaDelay, Migrate: true, Log: stderr,
	})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintln(stderr, "devstack: stopping")
		if o.state != "" {
			_ = os.Remove(o.state)
		}
		if cerr := stack.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		fmt.Fprintln(stderr, "devstack: stopped; everything removed")
	}()

	apis, err := stack.StartAPI(ctx, devstack.APIOptions{
		Binary: o.apiBin, Instances: o.instances, Addr: o.addr,
		Env: []string{"RYW_MODE=" + o.mode}, Output: stderr,
	})
	if err != nil {
		return err
	}

	w := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "primary\t%s\n", stack.Primary.URL)
	for _, r := range stack.Replicas {
		note := ""
		if r.ApplyDelay > 0 {
			note = fmt.Sprintf("\t(applies WAL %s late: recovery_min_apply_delay)", r.ApplyDelay)
		}
		fmt.Fprintf(w, "%s\t%s%s\n", r.Name, r.URL, note)
	}
	fmt.Fprintf(w, "redis\t%s\n", stack.Redis.URL)
	for _, a := range apis {
		fmt.Fprintf(w, "%s\t%s\t(RYW_MODE=%s)\n", a.Name, a.URL, o.mode)
	}
	fmt.Fprintf(w, "swagger\t%s/swagger/index.html\n", apis[0].URL)
	fmt.Fprintf(w, "logs\t%s\n", stack.Dir)
	if o.state != "" {
		if err := stack.WriteState(o.state); err != nil {
			return fmt.Errorf("write -state: %w", err)
		}
		fmt.Fprintf(w, "state\t%s\n", o.state)
	}
	w.Flush()
	fmt.Fprintln(stdout, "ready")

	<-ctx.Done()
	return nil
}

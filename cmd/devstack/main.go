// Command devstack runs the whole ryw stack on this machine with one
// command and no Docker: a real PostgreSQL primary, streaming replicas
// (the last one delayed, so lag is visible), Redis, and the API, on
// loopback. It prints the URLs, then "ready"; Ctrl-C stops everything and
// removes every file it made.
//
// Usage:
//
//	devstack [-replicas 2] [-replica-delay 2s] [-mode time|lsn|off]
//	         [-auth demo|jwt] [-issuer-addr 127.0.0.1:8090]
//	         [-pooler none|transaction|session] [-least-privilege]
//	         [-redis single|sentinel|cluster] [-redis-replicas 1]
//	         [-addr 127.0.0.1:8080] [-instances 1] [-state FILE] [-api-bin PATH]
//	devstack token [-issuer URL] [-ttl 1h] SUBJECT
//	devstack issuer [-addr :8090] [-issuer URL] [-audience ryw-api]
//
// With -auth jwt it also serves a development token issuer (a JWKS and a
// token endpoint) on loopback, and the API verifies bearer tokens against
// it; "devstack token <uuid>" prints a token for that user. "devstack
// issuer" serves the issuer alone (docker-compose.jwt.yml runs it). When
// AUTH_JWKS_URL, AUTH_ISSUER and AUTH_AUDIENCE are all set in its
// environment, the API trusts that issuer instead, and devstack serves
// none; setting only some of them is refused.
//
// -pooler puts a PgBouncer in front of every node; -least-privilege makes
// the API connect as a role that is not a superuser; -redis runs Redis as
// Sentinel (a master, a replica and three sentinels) or Cluster (three
// masters with -redis-replicas replicas each) instead of one server.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/ryw-go/ryw/internal/devissuer"
	"github.com/ryw-go/ryw/internal/devstack"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	run := run
	args := os.Args[1:]
	if len(args) > 0 {
		switch args[0] {
		case "token":
			run, args = runToken, args[1:]
		case "issuer":
			run, args = runIssuer, args[1:]
		}
	}
	if err := run(ctx, args, os.Stdout, os.Stderr); err != nil {
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
	auth         string
	issuerAddr   string
	labAddr      string
	syncStandbys int
	topology     devstack.Options // its Pooler, Redis, RedisReplicas and LeastPrivilege (devstack.TopologyFlags)
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
	fs.StringVar(&o.auth, "auth", envOr("AUTH_MODE", "demo"), "how the API identifies users: demo (X-Demo-UserId) or jwt (bearer tokens from a development issuer this command serves)")
	fs.StringVar(&o.issuerAddr, "issuer-addr", "127.0.0.1:8090", "with -auth jwt: loopback address of the development token issuer (port 0: a free port)")
	fs.IntVar(&o.syncStandbys, "sync-standbys", 0, "synchronous replication: commits wait for this many replicas (synchronous_standby_names = 'ANY N (...)'); 0: asynchronous")
	fs.StringVar(&o.labAddr, "lab-addr", "127.0.0.1:0", "loopback address of the lab, which the live page's buttons call to pause replicas and stop Redis")
	topology := devstack.AddTopologyFlags(fs)
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if err := topology.Apply(&o.topology); err != nil {
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
	case o.syncStandbys < 0 || o.syncStandbys > o.replicas:
		return o, fmt.Errorf("-sync-standbys must be between 0 and -replicas (%d), got %d", o.replicas, o.syncStandbys)
	case o.auth != "demo" && o.auth != "jwt":
		return o, fmt.Errorf("-auth must be demo or jwt, got %q", o.auth)
	}
	return o, nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// The API's settings for trusting a JWT issuer.
var issuerSettings = []string{"AUTH_JWKS_URL", "AUTH_ISSUER", "AUTH_AUDIENCE"}

// callersIssuer reports whether the environment names an issuer for the
// API to trust (all of issuerSettings set): devstack then passes it
// through and serves none of its own. Only some of them set is an error:
// devstack would otherwise replace them silently.
func callersIssuer(getenv func(string) string) (bool, error) {
	var set, missing []string
	for _, name := range issuerSettings {
		if getenv(name) != "" {
			set = append(set, name)
		} else {
			missing = append(missing, name)
		}
	}
	switch {
	case len(set) == 0:
		return false, nil
	case len(missing) == 0:
		return true, nil
	}
	return false, fmt.Errorf("with -auth jwt (AUTH_MODE=jwt), set all of %s to use your issuer, or none of them for devstack's development issuer: %s set, %s missing",
		strings.Join(issuerSettings, ", "), strings.Join(set, ", "), strings.Join(missing, ", "))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	callerIssuer := false
	if o.auth == "jwt" {
		if callerIssuer, err = callersIssuer(os.Getenv); err != nil {
			return err
		}
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

	fmt.Fprintf(stderr, "devstack: starting a primary, %d replica(s) and Redis: %s\n", o.replicas, devstack.DescribeTopology(o.topology))
	opts := o.topology
	opts.Replicas, opts.ReplicaDelay, opts.Migrate, opts.Log = o.replicas, o.replicaDelay, true, stderr
	stack, err := devstack.Start(ctx, opts)
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

	if o.syncStandbys > 0 {
		if err := stack.SetSynchronousStandbys(ctx, o.syncStandbys); err != nil {
			return err
		}
	}
	// The primary and then the replicas, read-write only: the API follows
	// the primary through the lab's failover without a restart.
	env := []string{"RYW_MODE=" + o.mode, "AUTH_MODE=" + o.auth, "DATABASE_URL=" + stack.PrimaryURLs()}
	labURL, err := stack.ServeLab(o.labAddr)
	if err != nil {
		return err
	}
	env = append(env, "RYW_LAB_URL="+labURL)
	var issuer *devstack.Issuer
	if o.auth == "jwt" && !callerIssuer {
		if issuer, err = stack.StartIssuer(o.issuerAddr); err != nil {
			return err
		}
		env = append(env, issuer.Env()...)
	}
	apis, err := stack.StartAPI(ctx, devstack.APIOptions{
		Binary: o.apiBin, Instances: o.instances, Addr: o.addr,
		Env: env, Output: stderr,
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
	for _, n := range append([]*devstack.Node{stack.Primary}, stack.Replicas...) {
		if b := n.Pooler(); b != nil {
			fmt.Fprintf(w, "pgbouncer-%s\t%s\t(%s pooling; the API connects through it)\n", n.Name, b.URL(), b.Mode)
		}
	}
	if o.topology.LeastPrivilege {
		fmt.Fprintf(w, "role\t%s\t(the API connects as it, not as the superuser: -least-privilege)\n", devstack.AppRole)
	}
	printRedis(ctx, w, stack)
	for _, a := range apis {
		fmt.Fprintf(w, "%s\t%s\t(RYW_MODE=%s, AUTH_MODE=%s)\n", a.Name, a.URL, o.mode, o.auth)
	}
	if callerIssuer {
		fmt.Fprintf(w, "issuer\t%s\t(yours: AUTH_JWKS_URL, AUTH_ISSUER and AUTH_AUDIENCE from the environment)\n", os.Getenv("AUTH_JWKS_URL"))
	}
	if issuer != nil {
		tokenCmd := "bin/devstack token <uuid>"
		if o.issuerAddr != "127.0.0.1:8090" {
			tokenCmd = "bin/devstack token -issuer " + issuer.URL + " <uuid>"
		}
		fmt.Fprintf(w, "issuer\t%s\t(development tokens: %s)\n", issuer.URL, tokenCmd)
	}
	fmt.Fprintf(w, "page\t%s/\t(the live page: replica lag, routing, try it, lab buttons)\n", apis[0].URL)
	fmt.Fprintf(w, "swagger\t%s/swagger/index.html\n", apis[0].URL)
	fmt.Fprintf(w, "lab\t%s\n", labURL)
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

// printRedis prints the stack's REDIS_URL and what runs behind it.
func printRedis(ctx context.Context, w io.Writer, stack *devstack.Stack) {
	switch stack.RedisTopology() {
	case devstack.RedisSentinel:
		fmt.Fprintf(w, "redis\t%s\t(Sentinel: master name %s)\n", stack.RedisURL(), devstack.SentinelMaster)
	case devstack.RedisCluster:
		fmt.Fprintf(w, "redis\t%s\t(Cluster: %d nodes)\n", stack.RedisURL(), len(stack.RedisNodes))
	default:
		fmt.Fprintf(w, "redis\t%s\n", stack.RedisURL())
		return
	}
	for _, r := range stack.RedisNodes {
		role, err := r.Role(ctx)
		switch {
		case err != nil:
			role = err.Error()
		case role == "slave":
			role = "replica"
		}
		fmt.Fprintf(w, "%s\t%s\t(%s)\n", r.Name, r.URL, role)
	}
	for _, r := range stack.Sentinels {
		fmt.Fprintf(w, "%s\t%s\n", r.Name, r.URL)
	}
}

// runToken prints a token of a running development issuer for a subject:
// TOKEN=$(bin/devstack token 2c9d...). The subject is the user id when it
// is a UUID; any other string becomes a UUIDv5 of the issuer and it.
func runToken(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("devstack token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	issuerURL := fs.String("issuer", envOr("RYW_ISSUER_URL", "http://127.0.0.1:8090"), "URL of the development issuer (devstack -auth jwt prints it)")
	ttl := fs.Duration("ttl", devissuer.DefaultTTL, "how long the token lives (at most 24h)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: devstack token [-issuer URL] [-ttl 1h] SUBJECT\n\nPrints a bearer token for SUBJECT (a user id, a UUID) from the development issuer of devstack -auth jwt.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 || fs.Arg(0) == "" {
		fs.Usage()
		return fmt.Errorf("token: give one subject, e.g. devstack token 11111111-1111-4111-8111-111111111111")
	}
	client := &http.Client{Timeout: 5 * time.Second}
	tok, err := devissuer.FetchToken(ctx, client, *issuerURL, fs.Arg(0), *ttl)
	if err != nil {
		return fmt.Errorf("token: %w (is devstack running with -auth jwt?)", err)
	}
	fmt.Fprintln(stdout, tok.AccessToken)
	return nil
}

// runIssuer serves the development issuer alone, for docker-compose: it
// mints any identity for anyone who reaches it, so it warns, and belongs
// on a private network or loopback only.
func runIssuer(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("devstack issuer", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:8090", "address to serve on")
	iss := fs.String("issuer", "", "the tokens' iss (default: http://ADDR/)")
	aud := fs.String("audience", devstack.IssuerAudience, "the tokens' aud (the API's AUTH_AUDIENCE)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("issuer: unexpected arguments %q", fs.Args())
	}
	if *iss == "" {
		*iss = "http://" + *addr + "/"
	}
	issuer, err := devissuer.New(*iss, *aud)
	if err != nil {
		return err
	}
	srv := &http.Server{Addr: *addr, Handler: issuer.Handler(), ReadHeaderTimeout: 5 * time.Second}
	fmt.Fprintf(stderr, "devstack issuer: DEVELOPMENT ONLY: anyone who reaches %s can mint a token for any user\n", *addr)
	fmt.Fprintf(stdout, "issuer\t%s (iss %s, aud %s); JWKS at %s, tokens at POST %s?sub=<uuid>\n", *addr, *iss, *aud, devissuer.JWKSPath, devissuer.TokenPath)
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	}
}

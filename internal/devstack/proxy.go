package devstack

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Proxy is a TCP proxy on loopback in front of one node (a PostgreSQL
// server or Redis), so that a test can cut or slow one client's network to
// that node without root-only tools: point the client at the proxy and
// inject faults. It is Shopify's toxiproxy, run in-process as a library.
type Proxy struct {
	// Addr is where clients connect: 127.0.0.1:<port>.
	Addr string

	mu    sync.Mutex
	proxy *toxiproxy.Proxy
}

// StartProxy starts a proxy that forwards to upstream (host:port).
func StartProxy(upstream string) (*Proxy, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	server := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	p := toxiproxy.NewProxy(server, "devstack-"+strconv.Itoa(port), addr, upstream)
	if err := p.Start(); err != nil {
		return nil, fmt.Errorf("devstack: start proxy to %s: %w", upstream, err)
	}
	return &Proxy{Addr: addr, proxy: p}, nil
}

// StartProxyForURL starts a proxy in front of the host:port of a
// postgres:// or redis:// URL and returns it with the URL rewritten to go
// through it.
func StartProxyForURL(rawURL string) (*Proxy, string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, "", err
	}
	p, err := StartProxy(u.Host)
	if err != nil {
		return nil, "", err
	}
	u.Host = p.Addr
	return p, u.String(), nil
}

// Blackhole makes the link swallow everything, both ways, without closing
// it: connections are accepted and never answered, as with a network that
// drops packets. Existing connections hang too.
func (p *Proxy) Blackhole() error {
	return p.add(`{"name":"blackhole-up","type":"timeout","stream":"upstream","attributes":{"timeout":0}}`,
		`{"name":"blackhole-down","type":"timeout","stream":"downstream","attributes":{"timeout":0}}`)
}

// Latency adds d to every chunk of data each way.
func (p *Proxy) Latency(d time.Duration) error {
	ms := d.Milliseconds()
	return p.add(fmt.Sprintf(`{"name":"latency-up","type":"latency","stream":"upstream","attributes":{"latency":%d}}`, ms),
		fmt.Sprintf(`{"name":"latency-down","type":"latency","stream":"downstream","attributes":{"latency":%d}}`, ms))
}

// Reset makes the link reset every connection (TCP RST) on its first data.
func (p *Proxy) Reset() error {
	return p.add(`{"name":"reset","type":"reset_peer","stream":"upstream","attributes":{"timeout":0}}`)
}

// Heal removes every fault: the link forwards again. Connections a
// blackhole held are still there and resume.
func (p *Proxy) Heal() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.proxy.Toxics.ResetToxics(context.Background())
	return nil
}

// Redirect makes the proxy forward to another upstream (host:port) at the
// same address, closing its connections: to its clients, the server at
// that address was replaced, as when a replica restarts, or an address
// (a virtual IP, a DNS name) moves to another server.
func (p *Proxy) Redirect(upstream string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.proxy.Stop()
	p.proxy.Upstream = upstream
	if err := p.proxy.Start(); err != nil {
		return fmt.Errorf("devstack: restart proxy %s to %s: %w", p.Addr, upstream, err)
	}
	return nil
}

// Close stops the proxy and closes its connections.
func (p *Proxy) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.proxy.Stop()
}

func (p *Proxy) add(toxics ...string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, t := range toxics {
		if _, err := p.proxy.Toxics.AddToxicJson(strings.NewReader(t)); err != nil {
			return fmt.Errorf("devstack: proxy fault %s: %w", t, err)
		}
	}
	return nil
}

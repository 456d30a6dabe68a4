package ryw_test

import (
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ryw-go/ryw/ryw"
)

// A Redis Cluster refuses a command whose keys live in different slots
// (CROSSSLOT), even on one node. The tracker's marks are two keys in two
// slots, so on a cluster they must never share a command: this runs the
// tracker on a real one-node cluster (every slot on one redis-server
// started with cluster-enabled).
func TestTrackerOnARedisCluster(t *testing.T) {
	needStack(t)
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal("redis-server is not on PATH:", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	dir := t.TempDir()
	srv := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
		"--cluster-config-file", dir+"/nodes.conf", "--dir", dir, "--save", "", "--appendonly", "no")
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	node := redis.NewClient(&redis.Options{Addr: addr})
	defer node.Close()
	ctx := t.Context()
	deadline := time.Now().Add(20 * time.Second)
	for node.Ping(ctx).Err() != nil {
		if time.Now().After(deadline) {
			t.Fatal("redis-server with cluster-enabled did not answer")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := node.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", 0, 16383).Err(); err != nil {
		t.Fatal(err)
	}
	for {
		info, _ := node.ClusterInfo(ctx).Result()
		if strings.Contains(info, "cluster_state:ok") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the one-node cluster did not come up: %s", info)
		}
		time.Sleep(20 * time.Millisecond)
	}

	client, err := ryw.NewRedisClient("redis://" + addr + "?cluster=true")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if _, ok := client.(*redis.ClusterClient); !ok {
		t.Fatalf("cluster=true built a %T", client)
	}
	wal := ryw.PrimaryWAL{DB: openPool(t, stack.Primary.URL)}
	tracker := ryw.NewRedisTracker(client, ryw.TrackerConfig{TTL: time.Minute, WAL: wal, Logger: quiet()})
	const users = 50
	for i := range users {
		if i%2 == 0 {
			if _, err := tracker.Record(ctx, fmt.Sprint("cluster-", i), tl1(ryw.LSN(0x2_0000_0000+i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	var wg sync.WaitGroup
	for i := range users {
		wg.Go(func() {
			withTime := i%4 < 2
			m, err := tracker.Lookup(ctx, fmt.Sprint("cluster-", i), withTime)
			want := ryw.LSN(0)
			if i%2 == 0 {
				want = ryw.LSN(0x2_0000_0000 + i)
			}
			if err != nil || m.Token.LSN != want || m.WrittenAt.IsZero() != (want == 0 || !withTime) {
				t.Errorf("user %d on the cluster: Lookup = %+v, %v; want token %s", i, m, err, want)
			}
		})
	}
	wg.Wait()
}

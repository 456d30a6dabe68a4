package devstack

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// The Cluster topology: three masters, each serving a third of the hash
// slots, each with Options.RedisReplicas replicas.
const (
	clusterMasters = 3
	// clusterNodeTimeout is how long a node may not answer before the
	// others take it as failed and its replica takes over: short, so that a
	// failover takes seconds, yet long enough that a loaded test machine
	// does not fail over by itself.
	clusterNodeTimeout = 2 * time.Second
)

// clusterShardStart is the first hash slot of each shard.
var clusterShardStart = [clusterMasters]int{0, 5461, 10923}

// startCluster starts the Cluster topology under base: masters redis1 to
// redis3, then their replicas (redis4 replicates redis1, and so on), with
// the slots assigned, and returns once every node says cluster_state:ok.
func (s *Stack) startCluster(ctx context.Context, bin, base string, as *account, replicas int) error {
	n := clusterMasters * (1 + replicas)
	for i := range n {
		if _, err := s.newRedisNode(fmt.Sprintf("redis%d", i+1), bin, base, as,
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", strconv.FormatInt(clusterNodeTimeout.Milliseconds(), 10),
			"--repl-diskless-load", "swapdb", "--repl-diskless-sync-delay", "0"); err != nil {
			return err
		}
	}
	s.Redis = s.RedisNodes[0]
	ids := make([]string, n)
	for i, r := range s.RedisNodes {
		if err := s.startRedisProc(ctx, r); err != nil {
			return err
		}
		c := r.client()
		id, err := c.ClusterMyID(ctx).Result()
		if err == nil && i < clusterMasters {
			// Distinct epochs from the start, as redis-cli --cluster create
			// sets them, rather than left to collide and be resolved.
			err = c.Do(ctx, "CLUSTER", "SET-CONFIG-EPOCH", i+1).Err()
		}
		if err == nil && i < clusterMasters {
			end := 16383
			if i+1 < clusterMasters {
				end = clusterShardStart[i+1] - 1
			}
			err = c.ClusterAddSlotsRange(ctx, clusterShardStart[i], end).Err()
		}
		c.Close()
		if err != nil {
			return fmt.Errorf("devstack: set up cluster node %s: %w", r.Name, err)
		}
		ids[i] = id
	}
	first := s.RedisNodes[0].client()
	defer first.Close()
	for _, r := range s.RedisNodes[1:] {
		if err := first.ClusterMeet(ctx, "127.0.0.1", strconv.Itoa(r.Port)).Err(); err != nil {
			return fmt.Errorf("devstack: CLUSTER MEET %s: %w", r.Name, err)
		}
	}
	for i, r := range s.RedisNodes[clusterMasters:] {
		master := ids[i%clusterMasters]
		// A node can replicate only a master it knows, which takes the
		// gossip a moment.
		err := poll(ctx, 20*time.Millisecond, func(ctx context.Context) (bool, error) {
			c := r.client()
			defer c.Close()
			if err := c.ClusterReplicate(ctx, master).Err(); err != nil {
				return false, err
			}
			return true, nil
		})
		if err != nil {
			return fmt.Errorf("devstack: CLUSTER REPLICATE %s on %s: %w", master, r.Name, err)
		}
	}
	addrs := make([]string, n)
	for i, r := range s.RedisNodes {
		addrs[i] = r.Addr()
	}
	s.logf("redis cluster: %d masters and %d replicas on %s", clusterMasters, n-clusterMasters, strings.Join(addrs, ", "))
	return s.waitCluster(ctx)
}

// clusterURL is RedisURL in the Cluster topology: every node, as seeds.
func (s *Stack) clusterURL() string {
	u := "redis://" + s.RedisNodes[0].Addr()
	for i, r := range s.RedisNodes[1:] {
		sep := "&"
		if i == 0 {
			sep = "?"
		}
		u += sep + "addr=" + r.Addr()
	}
	return u
}

// node is the stack's data node at addr (host:port), or nil.
func (s *Stack) node(addr string) *Redis {
	for _, r := range s.RedisNodes {
		if r.Addr() == addr {
			return r
		}
	}
	return nil
}

// clusterView is one node's view of which master serves each shard.
func (r *Redis) clusterView(ctx context.Context) ([clusterMasters]string, error) {
	var view [clusterMasters]string
	c := r.client()
	defer c.Close()
	slots, err := c.ClusterSlots(ctx).Result()
	if err != nil {
		return view, fmt.Errorf("%s: CLUSTER SLOTS: %w", r.Name, err)
	}
	for i, start := range clusterShardStart {
		for _, sl := range slots {
			if sl.Start <= start && start <= sl.End && len(sl.Nodes) > 0 {
				view[i] = sl.Nodes[0].Addr
			}
		}
	}
	return view, nil
}

// waitCluster waits until the Cluster topology is whole: every running
// node says cluster_state:ok with every slot served and knows every node,
// all agree on which master serves each shard, each such master is running
// and answers as one, and every other running node replicates from one of
// them, synchronised.
func (s *Stack) waitCluster(ctx context.Context) error {
	ctx, cancel := withDefaultTimeout(ctx, 60*time.Second)
	defer cancel()
	err := poll(ctx, 50*time.Millisecond, func(ctx context.Context) (bool, error) {
		var agreed [clusterMasters]string
		for _, r := range s.RedisNodes {
			if !r.Running() {
				continue
			}
			ok, err := r.clusterOK(ctx, len(s.RedisNodes))
			if !ok {
				return false, err
			}
			view, err := r.clusterView(ctx)
			if err != nil {
				return false, err
			}
			if agreed[0] != "" && view != agreed {
				return false, fmt.Errorf("the nodes disagree on the shards' masters: %v, %s says %v", agreed, r.Name, view)
			}
			agreed = view
		}
		masters := map[*Redis]bool{}
		for i, addr := range agreed {
			m := s.node(addr)
			if m == nil || !m.Running() {
				return false, fmt.Errorf("shard %d's master %s is not a running node of the stack", i, addr)
			}
			if role, err := m.Role(ctx); err != nil || role != "master" {
				return false, fmt.Errorf("shard %d's master %s answers as %q (%v)", i, m.Name, role, err)
			}
			masters[m] = true
		}
		for _, r := range s.RedisNodes {
			if masters[r] || !r.Running() {
				continue
			}
			f, err := r.info(ctx, "replication")
			if err != nil {
				return false, err
			}
			m := s.node(net.JoinHostPort(f["master_host"], f["master_port"]))
			if f["role"] != "slave" || !masters[m] || f["master_link_status"] != "up" {
				return false, fmt.Errorf("%s is not a synchronised replica of a master yet (role %s, master %s:%s, link %s)",
					r.Name, f["role"], f["master_host"], f["master_port"], f["master_link_status"])
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("devstack: wait for the redis cluster to settle: %w", err)
	}
	return nil
}

// clusterOK reports whether the node says the cluster is ok, with every
// slot served, and knows n nodes.
func (r *Redis) clusterOK(ctx context.Context, n int) (bool, error) {
	c := r.client()
	defer c.Close()
	text, err := c.ClusterInfo(ctx).Result()
	if err != nil {
		return false, fmt.Errorf("%s: CLUSTER INFO: %w", r.Name, err)
	}
	f := map[string]string{}
	for _, line := range strings.Split(text, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			f[k] = v
		}
	}
	if f["cluster_state"] != "ok" || f["cluster_slots_ok"] != "16384" || f["cluster_known_nodes"] != strconv.Itoa(n) {
		return false, fmt.Errorf("%s: cluster_state:%s, cluster_slots_ok:%s, cluster_known_nodes:%s (want ok, 16384, %d)",
			r.Name, f["cluster_state"], f["cluster_slots_ok"], f["cluster_known_nodes"], n)
	}
	return true, nil
}

// ClusterFailoverOptions say which master of the Cluster topology fails
// over, and how.
type ClusterFailoverOptions struct {
	// Shard is the shard whose master fails over: 0, 1 or 2, serving the
	// slots from 0, 5461 and 10923 on.
	Shard int
	// Kill crashes the master (SIGKILL): the other masters take it as
	// failed after the node timeout, and its replica is elected. Writes it
	// had not yet sent the replica are lost, and the shard answers
	// CLUSTERDOWN meanwhile. Without Kill the replica takes over with
	// CLUSTER FAILOVER, the graceful manual failover that loses nothing:
	// the master stops taking writes until the replica has them all.
	Kill bool
}

// ClusterFailoverResult is what a cluster failover did.
type ClusterFailoverResult struct {
	// Old is the master that failed over: killed (Kill), or now a replica
	// of Promoted.
	Old *Redis
	// Promoted is the replica that now serves the shard.
	Promoted *Redis
}

// ClusterFailover makes one master of the Cluster topology fail over to its
// replica (Options.RedisReplicas must be 1) and waits until every running
// node serves the shard from the promoted node and the cluster is whole
// again (see WaitRedis; without the killed node). A killed node stays down:
// Start brings it back, and it rejoins as a replica. No other use of the
// stack may run while it does this.
func (s *Stack) ClusterFailover(ctx context.Context, o ClusterFailoverOptions) (res ClusterFailoverResult, err error) {
	if s.redisTopology != RedisCluster {
		return res, fmt.Errorf("devstack: ClusterFailover needs the Cluster topology (Options.Redis = %q), not %q", RedisCluster, s.redisTopology)
	}
	if o.Shard < 0 || o.Shard >= clusterMasters {
		return res, fmt.Errorf("devstack: ClusterFailover: shard must be 0, 1 or 2, got %d", o.Shard)
	}
	ctx, cancel := withDefaultTimeout(ctx, 90*time.Second)
	defer cancel()
	if err := s.waitCluster(ctx); err != nil {
		return res, err
	}
	// waitCluster found every running node agreeing.
	var view [clusterMasters]string
	for _, r := range s.RedisNodes {
		if r.Running() {
			if view, err = r.clusterView(ctx); err != nil {
				return res, err
			}
			break
		}
	}
	res.Old = s.node(view[o.Shard])
	for _, r := range s.RedisNodes {
		if !r.Running() || r == res.Old {
			continue
		}
		if ok, _ := r.replicating(ctx, res.Old); ok {
			res.Promoted = r
			break
		}
	}
	if res.Promoted == nil {
		return res, fmt.Errorf("devstack: shard %d's master %s has no replica to fail over to (Options.RedisReplicas: 1)", o.Shard, res.Old.Name)
	}
	if o.Kill {
		err = res.Old.Kill(ctx)
	} else {
		c := res.Promoted.client()
		err = c.ClusterFailover(ctx).Err()
		c.Close()
	}
	if err != nil {
		return res, fmt.Errorf("devstack: fail over %s: %w", res.Old.Name, err)
	}
	err = poll(ctx, 20*time.Millisecond, func(ctx context.Context) (bool, error) {
		for _, r := range s.RedisNodes {
			if !r.Running() {
				continue
			}
			view, err := r.clusterView(ctx)
			if err != nil {
				return false, err
			}
			if view[o.Shard] != res.Promoted.Addr() {
				return false, fmt.Errorf("%s has shard %d served by %s", r.Name, o.Shard, view[o.Shard])
			}
		}
		return true, nil
	})
	if err != nil {
		return res, fmt.Errorf("devstack: wait for %s to take over shard %d from %s: %w", res.Promoted.Name, o.Shard, res.Old.Name, err)
	}
	how := "CLUSTER FAILOVER"
	if o.Kill {
		how = "killed"
	}
	s.logf("redis cluster: shard %d failed over from %s to %s (%s)", o.Shard, res.Old.Name, res.Promoted.Name, how)
	return res, s.waitCluster(ctx)
}

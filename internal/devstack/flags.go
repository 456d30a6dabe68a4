package devstack

import (
	"flag"
	"fmt"
	"strings"
)

// TopologyFlags are the command-line flags that choose a stack's topology,
// the same in every command that starts one (cmd/devstack, cmd/rywchaos):
// -pooler, -redis, -redis-replicas and -least-privilege.
type TopologyFlags struct {
	fs             *flag.FlagSet
	pooler         string
	redis          string
	redisReplicas  int
	leastPrivilege bool
}

// AddTopologyFlags defines the topology flags on fs.
func AddTopologyFlags(fs *flag.FlagSet) *TopologyFlags {
	f := &TopologyFlags{fs: fs}
	fs.StringVar(&f.pooler, "pooler", "none", "a PgBouncer in front of every node, in this pool mode: none, transaction or session")
	fs.StringVar(&f.redis, "redis", RedisSingle, "Redis topology: single, sentinel (a master, a replica and 3 sentinels) or cluster (3 masters)")
	fs.IntVar(&f.redisReplicas, "redis-replicas", 1, "with -redis cluster: replicas per master, 0 or 1")
	fs.BoolVar(&f.leastPrivilege, "least-privilege", false, "the API connects as "+AppRole+", a role that is not a superuser and holds only the grants it needs")
	return f
}

// Apply checks the flags, once parsed, and sets the topology fields of o:
// Pooler, Redis, RedisReplicas and LeastPrivilege.
func (f *TopologyFlags) Apply(o *Options) error {
	replicasSet := false
	f.fs.Visit(func(fl *flag.Flag) { replicasSet = replicasSet || fl.Name == "redis-replicas" })
	switch {
	case f.pooler != "none" && f.pooler != PoolTransaction && f.pooler != PoolSession:
		return fmt.Errorf("-pooler must be none, transaction or session, got %q", f.pooler)
	case f.redis != RedisSingle && f.redis != RedisSentinel && f.redis != RedisCluster:
		return fmt.Errorf("-redis must be single, sentinel or cluster, got %q", f.redis)
	case f.redisReplicas < 0 || f.redisReplicas > 1:
		return fmt.Errorf("-redis-replicas must be 0 or 1, got %d", f.redisReplicas)
	case replicasSet && f.redis != RedisCluster:
		return fmt.Errorf("-redis-replicas is for -redis cluster (Sentinel has one replica), not %s", f.redis)
	}
	o.Pooler, o.Redis, o.RedisReplicas, o.LeastPrivilege = f.pooler, f.redis, 0, f.leastPrivilege
	if o.Pooler == "none" {
		o.Pooler = ""
	}
	if o.Redis == RedisCluster {
		o.RedisReplicas = f.redisReplicas
	}
	return nil
}

// DescribeTopology says in words what o's topology runs, for reports:
// the pooler, the application's role and the Redis deployment.
func DescribeTopology(o Options) string {
	var parts []string
	switch o.Redis {
	case RedisSentinel:
		parts = append(parts, "Redis Sentinel (a master, a replica, 3 sentinels)")
	case RedisCluster:
		parts = append(parts, fmt.Sprintf("Redis Cluster (3 masters, %d replica(s) each)", o.RedisReplicas))
	default:
		parts = append(parts, "a single Redis")
	}
	if o.Pooler != "" {
		parts = append(parts, "PgBouncer in "+o.Pooler+" pooling in front of every node")
	} else {
		parts = append(parts, "no pooler")
	}
	if o.LeastPrivilege {
		parts = append(parts, "the API connects as "+AppRole+" (least privilege)")
	} else {
		parts = append(parts, "the API connects as the superuser")
	}
	return strings.Join(parts, "; ")
}

package ryw

// ChecksRun returns how many replay checks went to a server so far.
func ChecksRun() int64 { return checksRun.Load() }

// LookupBatches returns how many pipelines the tracker's lookups have sent.
func (t *RedisTracker) LookupBatches() int64 { return t.batch.batches.Load() }

package ryw

// ChecksRun returns how many replay checks went to a server so far.
func ChecksRun() int64 { return checksRun.Load() }

package main

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
)

// Runs of the mixed load vary more from run to run than the modes differ:
// the faults land at random moments, and on a small shared machine the
// same mode's rate moved by a third between runs a few minutes apart. So a
// comparison of two modes rests on pairs of runs made next to each other
// (-modes time,lsn,lsn,time,...), not on one run each, and says how sure
// it is.

// bootstrapDraws is how many resamples the intervals take; bootstrapSeed
// makes the report the same for the same runs.
const (
	bootstrapDraws = 10000
	bootstrapSeed  = 20
)

// byMode groups the runs that took time by mode, the modes in the order
// they first ran.
func byMode(results []result) (modes []string, runs map[string][]result) {
	runs = map[string][]result{}
	for _, r := range results {
		if r.elapsed <= 0 {
			continue
		}
		if _, ok := runs[r.mode]; !ok {
			modes = append(modes, r.mode)
		}
		runs[r.mode] = append(runs[r.mode], r)
	}
	return modes, runs
}

// compareRates returns how b's rates compare with a's: the geometric mean
// of the ratios of paired runs (the i-th of each; neighbours when the
// modes ran in turns) with a 95% bootstrap interval, resampling the pairs.
// With unequal counts, or fewer than 3 of either, ok is false.
func compareRates(a, b []float64) (est, lo, hi float64, ok bool) {
	if len(a) != len(b) || len(a) < 3 {
		return 0, 0, 0, false
	}
	logs := make([]float64, len(a))
	for i := range a {
		if a[i] <= 0 || b[i] <= 0 {
			return 0, 0, 0, false
		}
		logs[i] = math.Log(b[i] / a[i])
	}
	rng := rand.New(rand.NewPCG(bootstrapSeed, uint64(len(logs))))
	means := make([]float64, bootstrapDraws)
	for d := range means {
		sum := 0.0
		for range logs {
			sum += logs[rng.IntN(len(logs))]
		}
		means[d] = sum / float64(len(logs))
	}
	slices.Sort(means)
	mean := 0.0
	for _, l := range logs {
		mean += l
	}
	mean /= float64(len(logs))
	return math.Exp(mean), math.Exp(means[bootstrapDraws*25/1000]), math.Exp(means[bootstrapDraws*975/1000-1]), true
}

// writeComparison writes, for every mode run more than twice, how its
// requests a second compare with the first mode's (see compareRates), and
// the ratio of the requests each completed in all over its time in all.
func writeComparison(b *strings.Builder, results []result) {
	modes, runs := byMode(results)
	if len(modes) < 2 {
		return
	}
	rates := map[string][]float64{}
	ops, secs := map[string]float64{}, map[string]float64{}
	for _, m := range modes {
		for _, r := range runs[m] {
			rates[m] = append(rates[m], r.rate())
			ops[m] += float64(r.ops)
			secs[m] += r.elapsed.Seconds()
		}
	}
	base := modes[0]
	var rows []string
	for _, m := range modes[1:] {
		est, lo, hi, ok := compareRates(rates[base], rates[m])
		if !ok {
			continue
		}
		verdict := "a tie: the interval holds 1"
		switch {
		case lo > 1:
			verdict = "ahead"
		case hi < 1:
			verdict = "behind"
		}
		pooled := (ops[m] / secs[m]) / (ops[base] / secs[base])
		rows = append(rows, fmt.Sprintf("| %s / %s | %d | %.2fx | %.2fx-%.2fx | %s | %.2fx |", m, base, len(rates[m]), est, lo, hi, verdict, pooled))
	}
	if len(rows) == 0 {
		return
	}
	fmt.Fprintf(b, "\nEach mode against %s, run by run: the i-th run of each mode is paired with the i-th of %s. When the modes ran in turns (%s,%s,%s,%s,...), a pair ran side by side in time, and its ratio leaves out most of what the machine did meanwhile. The geometric mean of those ratios, with a 95%% bootstrap interval over the pairs (%d resamples), and the requests of all the runs over their time:\n\n", base, base, base, modes[1], modes[1], base, bootstrapDraws)
	fmt.Fprintln(b, "| modes | pairs | requests/s, paired | 95% interval | verdict | requests/s, pooled |")
	fmt.Fprintln(b, "|---|---|---|---|---|---|")
	for _, r := range rows {
		fmt.Fprintln(b, r)
	}
}

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// figure is one measured quantity for one wrapper: every sample, so that the
// JSON output keeps the raw data, and the statistics are computed on output.
type figure struct {
	Group   string    `json:"group"` // the table it belongs to
	Name    string    `json:"name"`
	Wrapper string    `json:"wrapper"`
	Unit    string    `json:"unit"` // ms, MiB, s/min, req/s, s, count
	Samples []float64 `json:"samples"`
	Target  *target   `json:"target,omitempty"`
	Note    string    `json:"note,omitempty"`  // how it was measured, or a caveat
	Error   string    `json:"error,omitempty"` // why samples are missing
}

// target is a bound from issue 5 that a statistic must not exceed.
type target struct {
	Max  float64 `json:"max"`
	Stat string  `json:"stat"` // "median", "max" or "value" (a single sample)
}

func (t *target) String() string {
	switch t.Stat {
	case "max":
		return fmt.Sprintf("max ≤ %g", t.Max)
	case "median":
		return fmt.Sprintf("median < %g", t.Max)
	}
	return fmt.Sprintf("≤ %g", t.Max)
}

// met reports whether f meets its target; ok is false without a target or
// samples.
func (f *figure) met() (met, ok bool) {
	if f.Target == nil || len(f.Samples) == 0 {
		return false, false
	}
	s := summarize(f.Samples)
	switch f.Target.Stat {
	case "max":
		return s.max <= f.Target.Max, true
	case "median":
		return s.median < f.Target.Max, true
	}
	return s.median <= f.Target.Max, true
}

// summary holds the statistics the tables show.
type summary struct {
	n                int
	median, p90, max float64
}

// summarize computes the median (the mean of the two middle samples when
// their number is even), the 90th percentile by nearest rank (the smallest
// sample with at least 90% of the samples at or below it) and the max.
func summarize(samples []float64) summary {
	s := slices.Clone(samples)
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return summary{}
	}
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	rank := int(math.Ceil(0.9 * float64(n)))
	return summary{n: n, median: med, p90: s[max(rank, 1)-1], max: s[n-1]}
}

// durationStats returns the median and max of ds.
func durationStats(ds []time.Duration) (time.Duration, time.Duration) {
	if len(ds) == 0 {
		return 0, 0
	}
	f := make([]float64, len(ds))
	for i, d := range ds {
		f[i] = float64(d)
	}
	s := summarize(f)
	return time.Duration(s.median), time.Duration(s.max)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// format prints v in unit with the precision that unit deserves.
func format(v float64, unit string) string {
	switch unit {
	case "ms":
		switch {
		case math.Abs(v) < 10:
			return fmt.Sprintf("%.2f", v)
		case math.Abs(v) < 1000:
			return fmt.Sprintf("%.1f", v)
		}
		return fmt.Sprintf("%.0f", v)
	case "count":
		return fmt.Sprintf("%.0f", v)
	case "s/min":
		return fmt.Sprintf("%.4f", v)
	case "MiB", "s", "req/s", "%":
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.3g", v)
}

// printTables writes one table per group, in the order the groups first
// appear in figs.
func printTables(w io.Writer, figs []*figure) {
	var groups []string
	for _, f := range figs {
		if !slices.Contains(groups, f.Group) {
			groups = append(groups, f.Group)
		}
	}
	for _, g := range groups {
		fmt.Fprintf(w, "\n## %s\n\n", g)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "measurement\twrapper\tunit\tn\tmedian\tp90\tmax\ttarget\tmet\t")
		var notes []string
		for _, f := range figs {
			if f.Group != g {
				continue
			}
			s := summarize(f.Samples)
			cols := []string{f.Name, f.Wrapper, f.Unit, fmt.Sprint(s.n), "-", "-", "-", "", ""}
			switch {
			case s.n == 1:
				cols[4] = format(s.median, f.Unit)
			case s.n > 1:
				cols[4], cols[5], cols[6] = format(s.median, f.Unit), format(s.p90, f.Unit), format(s.max, f.Unit)
			}
			if f.Target != nil {
				cols[7] = f.Target.String()
				if met, ok := f.met(); ok {
					cols[8] = map[bool]string{true: "yes", false: "NO"}[met]
				}
			}
			fmt.Fprintln(tw, strings.Join(cols, "\t")+"\t")
			if f.Error != "" {
				notes = append(notes, fmt.Sprintf("%s [%s]: error: %s", f.Name, f.Wrapper, f.Error))
			}
			if f.Note != "" {
				notes = append(notes, fmt.Sprintf("%s [%s]: %s", f.Name, f.Wrapper, f.Note))
			}
		}
		tw.Flush()
		if len(notes) > 0 {
			fmt.Fprintln(w)
			for _, n := range notes {
				fmt.Fprintln(w, "  - "+n)
			}
		}
	}
}

// writeJSON writes the machine, the settings and every figure with its
// samples to path.
func writeJSON(path string, meta map[string]any, figs []*figure) error {
	type out struct {
		Meta    map[string]any `json:"meta"`
		Figures []*figure      `json:"figures"`
	}
	data, err := json.MarshalIndent(out{meta, figs}, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

package main

import (
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// The README's pictures, drawn with gonum/plot from the run's figures.
var (
	colFresh   = color.RGBA{R: 0x2b, G: 0x8a, B: 0x3e, A: 0xff}
	colStale   = color.RGBA{R: 0xc9, G: 0x2a, B: 0x2a, A: 0xff}
	colReplica = color.RGBA{R: 0x42, G: 0x63, B: 0xeb, A: 0xff}
	colLag     = color.RGBA{R: 0xd9, G: 0x48, B: 0x0f, A: 0xff}
	colPause   = color.RGBA{R: 0xf1, G: 0xf3, B: 0xf5, A: 0xff}
)

// writePictures draws the pictures of the main config into dir.
func writePictures(dir string, main configResult) ([]string, error) {
	var written []string
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	save := func(name string, draw func(path string) error) error {
		path := filepath.Join(dir, name)
		if err := draw(path); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		written = append(written, path)
		return nil
	}
	if len(main.timelines) > 0 {
		if err := save("bench-own-writes.png", func(p string) error { return ownWritesPlot(p, main.timelines) }); err != nil {
			return written, err
		}
	}
	if err := save("bench-latency.png", func(p string) error { return latencyPlot(p, main) }); err != nil {
		return written, err
	}
	if len(main.timelines) > 0 {
		if err := save("bench-pause-timeline.png", func(p string) error { return timelinePlot(p, main.timelines) }); err != nil {
			return written, err
		}
	}
	return written, nil
}

// ownWritesPlot: per mode, the share of the timeline's reads (each one
// right after the user's own write, with a replica paused half the time)
// that replicas served, and the share that was stale.
func ownWritesPlot(path string, tls []timeline) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Reading back your own writes while %s is paused half the time", tls[0].paused)
	p.Y.Label.Text = "% of the reads"
	p.Y.Min, p.Y.Max = 0, 115
	var names []string
	var replicas, stale plotter.Values
	for _, tl := range tls {
		names = append(names, "RYW_MODE="+tl.mode)
		replicas = append(replicas, pct(tl.replica, len(tl.reads)))
		stale = append(stale, pct(tl.stale, len(tl.reads)))
	}
	if err := barPair(p, names, vg.Points(28),
		bars{replicas, colReplica, "served by a replica (offload)"},
		bars{stale, colStale, "stale: showed an older profile"}); err != nil {
		return err
	}
	var labels plotter.XYLabels
	for i, tl := range tls {
		labels.XYs = append(labels.XYs, plotter.XY{X: float64(i) + 0.05, Y: stale[i] + 2})
		labels.Labels = append(labels.Labels, fmt.Sprintf("%d of %d", tl.stale, len(tl.reads)))
	}
	l, err := plotter.NewLabels(labels)
	if err != nil {
		return err
	}
	p.Add(l)
	// Wider with -pooler's six processes, so that their names fit.
	return p.Save(vg.Length(max(6.5, 1.8*float64(len(tls))))*vg.Inch, 3.6*vg.Inch, path)
}

// bars is one series of a bar chart.
type bars struct {
	values plotter.Values
	color  color.Color
	label  string
}

// barPair draws two series side by side over the nominal x values names,
// with a grid and a legend.
func barPair(p *plot.Plot, names []string, w vg.Length, left, right bars) error {
	p.Add(plotter.NewGrid())
	for i, b := range []bars{left, right} {
		chart, err := plotter.NewBarChart(b.values, w)
		if err != nil {
			return err
		}
		chart.Color, chart.LineStyle.Width, chart.Offset = b.color, 0, w*vg.Length(2*i-1)/2
		p.Add(chart)
		p.Legend.Add(b.label, chart)
	}
	p.Legend.Top = true
	p.NominalX(names...)
	p.X.Min, p.X.Max = -0.6, float64(len(names))-0.4
	return nil
}

func pct(n, of int) float64 {
	if of == 0 {
		return 0
	}
	return 100 * float64(n) / float64(of)
}

// latencyPlot: p50 and p99 of GET /api/me at half the off-mode peak.
func latencyPlot(path string, c configResult) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("GET /api/me latency at %d req/s (half the off-mode peak)", c.rate)
	p.Y.Label.Text = "milliseconds"
	var names []string
	var p50, p99 plotter.Values
	for _, m := range c.modes {
		s := summarize(c, m)
		names = append(names, m)
		p50 = append(p50, s.p50)
		p99 = append(p99, s.p99)
	}
	if err := barPair(p, names, vg.Points(22), bars{p50, colReplica, "p50"}, bars{p99, colLag, "p99"}); err != nil {
		return err
	}
	p.Y.Min, p.Y.Max = 0, slices.Max(p99)*1.3
	return p.Save(vg.Length(max(6, 1.3*float64(len(names))))*vg.Inch, 3.6*vg.Inch, path)
}

// timelinePlot: the paused replica's lag, and below it, per mode, where
// each read went (one row per node) and whether it was fresh.
func timelinePlot(path string, tls []timeline) error {
	secs := func(d interface{ Seconds() float64 }) float64 { return d.Seconds() }
	pauseBox := func(p *plot.Plot, top float64) error {
		box, err := plotter.NewPolygon(plotter.XYs{{X: secs(pauseAt), Y: 0}, {X: secs(resumeAt), Y: 0}, {X: secs(resumeAt), Y: top}, {X: secs(pauseAt), Y: top}})
		if err != nil {
			return err
		}
		box.Color, box.LineStyle.Width = colPause, 0
		p.Add(box)
		return nil
	}
	rows := [][]*plot.Plot{}

	lagPlot := plot.New()
	lagPlot.Title.Text = fmt.Sprintf("%s's replay paused from %.1fs to %.1fs (shaded): its lag", tls[0].paused, secs(pauseAt), secs(resumeAt))
	lagPlot.Y.Label.Text = "lag (KiB of WAL)"
	var xys plotter.XYs
	top := 1.0
	for _, l := range tls[0].lag {
		xys = append(xys, plotter.XY{X: secs(l.at), Y: l.bytes / 1024})
		top = max(top, l.bytes/1024*1.1)
	}
	if err := pauseBox(lagPlot, top); err != nil {
		return err
	}
	if len(xys) > 1 {
		line, err := plotter.NewLine(xys)
		if err != nil {
			return err
		}
		line.Color, line.Width = colLag, vg.Points(1.5)
		lagPlot.Add(line)
	}
	lagPlot.X.Min, lagPlot.X.Max, lagPlot.Y.Min = 0, secs(timelineLength), 0
	rows = append(rows, []*plot.Plot{lagPlot})

	for _, tl := range tls {
		nodes := []string{"primary"}
		for _, r := range tl.reads {
			if !slices.Contains(nodes, r.servedBy) {
				nodes = append(nodes, r.servedBy)
			}
		}
		slices.Sort(nodes[1:])
		p := plot.New()
		p.Title.Text = fmt.Sprintf("RYW_MODE=%s: each read by the node that served it, green fresh, red stale (%d of %d stale)", tl.mode, tl.stale, len(tl.reads))
		if err := pauseBox(p, float64(len(nodes))-0.5); err != nil {
			return err
		}
		var fresh, stale plotter.XYs
		for _, r := range tl.reads {
			xy := plotter.XY{X: secs(r.at), Y: float64(slices.Index(nodes, r.servedBy))}
			if r.fresh {
				fresh = append(fresh, xy)
			} else {
				stale = append(stale, xy)
			}
		}
		for _, set := range []struct {
			xys plotter.XYs
			c   color.Color
		}{{fresh, colFresh}, {stale, colStale}} {
			if len(set.xys) == 0 {
				continue
			}
			s, err := plotter.NewScatter(set.xys)
			if err != nil {
				return err
			}
			s.GlyphStyle.Color, s.GlyphStyle.Radius, s.GlyphStyle.Shape = set.c, vg.Points(2.2), draw.CircleGlyph{}
			p.Add(s)
		}
		p.NominalY(nodes...)
		p.Y.Min, p.Y.Max = -0.5, float64(len(nodes))-0.5
		p.X.Min, p.X.Max = 0, secs(timelineLength)
		p.X.Label.Text = "seconds"
		rows = append(rows, []*plot.Plot{p})
	}

	const w, h = 7 * vg.Inch, 2.2 * vg.Inch
	img := vgimg.New(w, h*vg.Length(len(rows)))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: len(rows), Cols: 1, PadTop: vg.Points(4), PadBottom: vg.Points(4), PadX: vg.Points(4), PadY: vg.Points(8)}
	canvases := plot.Align(rows, tiles, dc)
	for i := range rows {
		rows[i][0].Draw(canvases[i][0])
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

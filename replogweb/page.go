package replogweb

import (
	_ "embed"
	"fmt"
	"html/template"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/replog/replog"
)

//go:embed page.html
var pageHTML string

var pageTemplate = template.Must(template.New("page").Funcs(template.FuncMap{
	"bytes":   formatBytes,
	"count":   formatCount,
	"latency": formatLatency,
	"nodes":   formatNodes,
	"offset":  formatOffset,
	"age":     formatAge,
}).Parse(pageHTML))

// pageData is what page.html renders.
type pageData struct {
	Now     time.Time
	Refresh int
	Closed  bool
	Node    replog.NodeStats
	Uptime  time.Duration
	// Window is how far back the plots go.
	Window      string
	Plots       []plot
	Topics      []topicView
	Groups      []replog.GroupStats
	ShareGroups []replog.ShareGroupStats
}

type topicView struct {
	replog.TopicInfo
	Rows []partRow
	// Local is how many of its partitions have a replica on this node.
	Local int
}

// partRow is one partition: its Stats if this node hosts a replica.
type partRow struct {
	Partition int
	Replicas  []uint64
	Local     bool
	Stats     replog.PartitionStats
}

func buildPage(now time.Time, l *replog.Log, s replog.Stats, hist []sample, refresh int) pageData {
	d := pageData{Now: now, Refresh: refresh, Node: s.Node, Groups: s.Groups, ShareGroups: s.ShareGroups, Uptime: now.Sub(s.Node.Started)}
	select {
	case <-l.Done():
		d.Closed = true
	default:
	}
	local := map[string]map[int]replog.PartitionStats{}
	for _, p := range s.Partitions {
		if local[p.Topic] == nil {
			local[p.Topic] = map[int]replog.PartitionStats{}
		}
		local[p.Topic][p.Partition] = p
	}
	for _, t := range l.Topics() {
		tv := topicView{TopicInfo: t}
		for i := range t.Partitions {
			r := partRow{Partition: i}
			if i < len(t.PartitionReplicas) {
				r.Replicas = t.PartitionReplicas[i]
			}
			if ps, ok := local[t.Name][i]; ok {
				r.Local, r.Stats, r.Replicas = true, ps, ps.Replicas
				tv.Local++
			}
			tv.Rows = append(tv.Rows, r)
		}
		d.Topics = append(d.Topics, tv)
	}
	d.Plots = plots(hist)
	d.Window = "minutes"
	if len(hist) > 1 {
		// Each rate covers the interval before its sample.
		d.Window = formatAge(hist[len(hist)-1].Time.Sub(hist[0].Time) + interval)
	}
	return d
}

// Plot geometry, in SVG user units (the SVG scales to its box).
const (
	plotW, plotH                               = 400, 170
	padLeft, padRight, padTop, padBottom       = 46, 12, 10, 24
	innerW, innerH                       int64 = plotW - padLeft - padRight, plotH - padTop - padBottom
)

// maxLagLines caps the lines of the lag plot: the groups with the largest
// current lag are drawn.
const maxLagLines = 8

var lagColors = []string{"#d97706", "#7c3aed", "#dc2626", "#0891b2", "#65a30d", "#db2777", "#475569", "#2563eb"}

// plot is one server-drawn chart.
type plot struct {
	ID, Title, Unit string
	// Current is the latest value, formatted; Detail a second figure.
	Current, Detail string
	// Empty says why nothing is drawn ("" when lines are).
	Empty          string
	W, H           int
	Left, Right    int
	Top, Bottom    int
	XTicks, YTicks []tick
	Lines          []line
	Note           string
}

// CX and CY are the middle of the plotting area.
func (p plot) CX() float64 { return float64(p.Left+p.Right) / 2 }
func (p plot) CY() float64 { return float64(p.Top+p.Bottom) / 2 }

type tick struct {
	X, Y  float64
	Label string
}

type line struct {
	Name, Color, Current string
	// D is the line's path; Area the path closed down to the x axis.
	D, Area string
}

func plots(hist []sample) []plot {
	produced := newPlot("produced", "Produced", "records/s", hist)
	fetched := newPlot("fetched", "Fetched", "records/s", hist)
	lag := newPlot("lag", "Group lag", "records", hist)
	if len(hist) > 0 {
		last := hist[len(hist)-1]
		produced.Current = formatRate(last.ProducedRecordsPerSec)
		produced.Detail = formatBytes(int64(last.ProducedBytesPerSec)) + "/s"
		fetched.Current = formatRate(last.FetchedRecordsPerSec)
		fetched.Detail = formatBytes(int64(last.FetchedBytesPerSec)) + "/s"
	}
	if produced.Empty == "" {
		produced.draw(hist, []series{{name: "produced", color: "#2563eb", v: func(s sample) (float64, bool) { return s.ProducedRecordsPerSec, true }}}, true)
		fetched.draw(hist, []series{{name: "fetched", color: "#059669", v: func(s sample) (float64, bool) { return s.FetchedRecordsPerSec, true }}}, true)
		lag.drawLag(hist)
	}
	return []plot{produced, fetched, lag}
}

func newPlot(id, title, unit string, hist []sample) plot {
	p := plot{ID: id, Title: title, Unit: unit, W: plotW, H: plotH,
		Left: padLeft, Right: plotW - padRight, Top: padTop, Bottom: plotH - padBottom}
	if len(hist) < 2 {
		p.Empty = "collecting samples…"
	}
	return p
}

type series struct {
	name, color string
	v           func(sample) (float64, bool) // false: no value at this sample
}

func (p *plot) drawLag(hist []sample) {
	last := hist[len(hist)-1]
	groups := make([]string, 0, len(last.Lag))
	seen := map[string]bool{}
	for _, s := range hist {
		for g := range s.Lag {
			if !seen[g] {
				seen[g] = true
				groups = append(groups, g)
			}
		}
	}
	if len(groups) == 0 {
		p.Empty = "no consumer groups"
		return
	}
	// Largest current lag first, then by name.
	slices.SortFunc(groups, func(a, b string) int {
		if la, lb := last.Lag[a], last.Lag[b]; la != lb {
			return cmpInt(lb, la)
		}
		return strings.Compare(a, b)
	})
	if len(groups) > maxLagLines {
		p.Note = fmt.Sprintf("%d of %d groups, by current lag", maxLagLines, len(groups))
		groups = groups[:maxLagLines]
	}
	var ss []series
	var total int64
	for i, g := range groups {
		ss = append(ss, series{name: g, color: lagColors[i%len(lagColors)], v: func(s sample) (float64, bool) {
			v, ok := s.Lag[g]
			return float64(v), ok
		}})
		total += last.Lag[g]
	}
	p.Current = formatCount(total)
	if len(groups) > 1 {
		p.Detail = "sum of " + strconv.Itoa(len(groups)) + " groups"
	}
	p.draw(hist, ss, len(ss) == 1)
}

// draw lays the series out: time on x from the oldest sample to the
// latest, y from 0 to a round maximum. fill shades the area under a lone
// series.
func (p *plot) draw(hist []sample, ss []series, fill bool) {
	t0, t1 := hist[0].Time, hist[len(hist)-1].Time
	span := t1.Sub(t0).Seconds()
	if span <= 0 {
		p.Empty = "collecting samples…"
		return
	}
	top := 0.0
	for _, s := range ss {
		for _, h := range hist {
			if v, ok := s.v(h); ok {
				top = max(top, v)
			}
		}
	}
	top = niceCeil(top)
	x := func(t time.Time) float64 { return padLeft + t.Sub(t0).Seconds()/span*float64(innerW) }
	y := func(v float64) float64 { return padTop + float64(innerH)*(1-v/top) }
	for _, f := range []float64{0, 0.5, 1} {
		p.YTicks = append(p.YTicks, tick{X: padLeft, Y: y(f * top), Label: formatShort(f * top)})
	}
	for _, f := range []float64{0, 0.5, 1} {
		label := "now"
		if f < 1 {
			label = "−" + formatAge(time.Duration(span*(1-f)*float64(time.Second)))
		}
		p.XTicks = append(p.XTicks, tick{X: padLeft + f*float64(innerW), Y: plotH - padBottom, Label: label})
	}
	for _, s := range ss {
		var d strings.Builder
		gaps := false
		pen := false // whether the path has a current point
		var first, last float64
		for i, h := range hist {
			v, ok := s.v(h)
			if !ok {
				pen, gaps = false, gaps || i > 0
				continue
			}
			px := x(h.Time)
			if !pen {
				if d.Len() == 0 {
					first = px
				}
				fmt.Fprintf(&d, "M%.1f %.1f", px, y(v))
				pen = true
			} else {
				fmt.Fprintf(&d, "L%.1f %.1f", px, y(v))
			}
			last = px
		}
		ln := line{Name: s.name, Color: s.color, D: d.String()}
		if v, ok := s.v(hist[len(hist)-1]); ok {
			ln.Current = formatCount(int64(math.Round(v)))
		}
		if fill && !gaps && d.Len() > 0 {
			ln.Area = fmt.Sprintf("%sL%.1f %.1fL%.1f %.1fZ", ln.D, last, y(0), first, y(0))
		}
		p.Lines = append(p.Lines, ln)
	}
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// niceCeil rounds v up to a round number (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6
// or 8 times a power of ten), at least 1: the top of a y axis.
func niceCeil(v float64) float64 {
	if v <= 1 {
		return 1
	}
	e := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10} {
		if m*e >= v {
			return m * e
		}
	}
	return 10 * e
}

func formatRate(v float64) string {
	if v < 10 && v != math.Trunc(v) {
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return formatCount(int64(math.Round(v)))
}

// formatCount writes an integer with thousands separators.
func formatCount(n any) string {
	var s string
	switch n := n.(type) {
	case int:
		s = strconv.Itoa(n)
	case int64:
		s = strconv.FormatInt(n, 10)
	case uint64:
		s = strconv.FormatUint(n, 10)
	default:
		return fmt.Sprint(n)
	}
	digits := strings.TrimPrefix(s, "-")
	var b strings.Builder
	b.WriteString(s[:len(s)-len(digits)])
	for i, c := range digits {
		if i > 0 && (len(digits)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// formatShort writes an axis label: 950, 1.5k, 20k, 3M.
func formatShort(v float64) string {
	for _, u := range []struct {
		div float64
		sfx string
	}{{1e9, "G"}, {1e6, "M"}, {1e3, "k"}} {
		if v >= u.div {
			return strconv.FormatFloat(v/u.div, 'f', -1, 64) + u.sfx
		}
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

// formatBytes writes a byte count (an int, int64 or uint64) in binary
// units.
func formatBytes(v any) string {
	var n uint64
	switch v := v.(type) {
	case int:
		n = uint64(max(v, 0))
	case int64:
		n = uint64(max(v, 0))
	case uint64:
		n = v
	default:
		return fmt.Sprint(v)
	}
	const unit = 1024
	if n < unit {
		return strconv.FormatUint(n, 10) + " B"
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// formatLatency writes a quantile of a [replog.Latency]: a bucket bound,
// at most twice the true value.
func formatLatency(l replog.Latency, q string) string {
	if l.Count == 0 {
		return "–"
	}
	d := l.P50
	if q == "p99" {
		d = l.P99
	}
	return roundDuration(d).String()
}

// roundDuration keeps 3 significant digits: 98.8µs, 1.02ms.
func roundDuration(d time.Duration) time.Duration {
	unit := time.Duration(1)
	for n := d; n >= 1000; n /= 10 {
		unit *= 10
	}
	return d.Round(unit)
}

func formatNodes(ids []uint64) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = strconv.FormatUint(id, 10)
	}
	return strings.Join(s, ", ")
}

// formatOffset writes a committed offset or a lag; -1 means none.
func formatOffset(n int64) string {
	if n < 0 {
		return "–"
	}
	return formatCount(n)
}

// formatAge writes an uptime or an age: 3d4h, 7d, 2h5m, 4m10s, 12s.
func formatAge(d time.Duration) string {
	d = d.Round(time.Second)
	units := []struct {
		d   time.Duration
		sfx string
	}{{24 * time.Hour, "d"}, {time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}}
	for i, u := range units[:len(units)-1] {
		if d >= u.d {
			s := strconv.FormatInt(int64(d/u.d), 10) + u.sfx
			if r := d % u.d / units[i+1].d; r > 0 {
				s += strconv.FormatInt(int64(r), 10) + units[i+1].sfx
			}
			return s
		}
	}
	return strconv.FormatInt(int64(d/time.Second), 10) + "s"
}

package server

import (
	"fmt"
	"io"
	"math"
	"sync/atomic"
	"time"
)

// histogram is a Prometheus histogram with fixed buckets, safe for
// concurrent use without locks.
type histogram struct {
	bounds []float64 // seconds, ascending
	counts []atomic.Int64
	sumNs  atomic.Int64
	total  atomic.Int64
}

func newHistogram(bounds ...float64) *histogram {
	return &histogram{bounds: bounds, counts: make([]atomic.Int64, len(bounds))}
}

func (h *histogram) observe(d time.Duration) {
	s := d.Seconds()
	for i, b := range h.bounds {
		if s <= b {
			h.counts[i].Add(1)
			break
		}
	}
	h.sumNs.Add(int64(d))
	h.total.Add(1)
}

func (h *histogram) write(w io.Writer, name, help, labels string) {
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name)
	var cum int64
	sep := ""
	if labels != "" {
		sep = ","
	}
	for i, b := range h.bounds {
		cum += h.counts[i].Load()
		fmt.Fprintf(w, "%s_bucket{%s%sle=\"%g\"} %d\n", name, labels, sep, b, cum)
	}
	fmt.Fprintf(w, "%s_bucket{%s%sle=\"+Inf\"} %d\n", name, labels, sep, h.total.Load())
	lb := ""
	if labels != "" {
		lb = "{" + labels + "}"
	}
	fmt.Fprintf(w, "%s_sum%s %g\n%s_count%s %d\n", name, lb, float64(h.sumNs.Load())/1e9, name, lb, h.total.Load())
}

var ioBuckets = []float64{0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5}
var callBuckets = []float64{0.001, 0.01, 0.1, 0.5, 1, 5, 30, 120, 600}

// metrics are the host's Prometheus metrics.
type metrics struct {
	start        time.Time
	nbdConns     atomic.Int64
	nbdRefused   atomic.Int64
	nbdRead      atomic.Int64
	nbdWritten   atomic.Int64
	readLatency  *histogram
	writeLatency *histogram
	apiCalls     [6]atomic.Int64 // by status class: 1xx..5xx, other
	apiLatency   *histogram
	logins       atomic.Int64
	loginFails   atomic.Int64
	snapCreated  atomic.Int64
	snapRemoved  atomic.Int64
	snapReverted atomic.Int64
	cbtQueries   atomic.Int64
	cbtLatency   *histogram
}

func newMetrics() *metrics {
	return &metrics{start: time.Now(), readLatency: newHistogram(ioBuckets...), writeLatency: newHistogram(ioBuckets...),
		apiLatency: newHistogram(callBuckets...), cbtLatency: newHistogram(callBuckets...)}
}

func (m *metrics) write(w io.Writer, sessions, limConns int, limMem int64) {
	g := func(name, help string, v any) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s gauge\n%s %v\n", name, help, name, name, v)
	}
	c := func(name, help string, v int64) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s counter\n%s %d\n", name, help, name, name, v)
	}
	g("vdisk_up_seconds", "Seconds since the server started.", math.Round(time.Since(m.start).Seconds()))
	g("vdisk_sessions", "Control API sessions logged in.", sessions)
	g("vdisk_nbd_connections", "NBD connections open on a disk.", m.nbdConns.Load())
	g("vdisk_limit_connections", "Connections counted against the host limit.", limConns)
	g("vdisk_limit_memory_bytes", "Memory reserved against the host budget.", limMem)
	c("vdisk_nbd_refused_total", "NBD connections refused (ticket, limit or disk).", m.nbdRefused.Load())
	c("vdisk_nbd_read_bytes_total", "Bytes read by NBD clients.", m.nbdRead.Load())
	c("vdisk_nbd_written_bytes_total", "Bytes written by NBD clients.", m.nbdWritten.Load())
	m.readLatency.write(w, "vdisk_nbd_read_seconds", "Latency of NBD reads at the disk.", "")
	m.writeLatency.write(w, "vdisk_nbd_write_seconds", "Latency of NBD writes at the disk.", "")
	fmt.Fprintf(w, "# HELP vdisk_api_requests_total Control API requests by status class.\n# TYPE vdisk_api_requests_total counter\n")
	for i, cl := range []string{"1xx", "2xx", "3xx", "4xx", "5xx", "other"} {
		fmt.Fprintf(w, "vdisk_api_requests_total{class=%q} %d\n", cl, m.apiCalls[i].Load())
	}
	m.apiLatency.write(w, "vdisk_api_request_seconds", "Latency of control API requests.", "")
	c("vdisk_logins_total", "Successful logins.", m.logins.Load())
	c("vdisk_login_failures_total", "Refused logins.", m.loginFails.Load())
	fmt.Fprintf(w, "# HELP vdisk_snapshot_operations_total Snapshot operations by kind.\n# TYPE vdisk_snapshot_operations_total counter\n")
	fmt.Fprintf(w, "vdisk_snapshot_operations_total{op=\"create\"} %d\n", m.snapCreated.Load())
	fmt.Fprintf(w, "vdisk_snapshot_operations_total{op=\"remove\"} %d\n", m.snapRemoved.Load())
	fmt.Fprintf(w, "vdisk_snapshot_operations_total{op=\"revert\"} %d\n", m.snapReverted.Load())
	c("vdisk_cbt_queries_total", "Changed-area queries answered.", m.cbtQueries.Load())
	m.cbtLatency.write(w, "vdisk_cbt_query_seconds", "Latency of changed-area queries.", "")
}

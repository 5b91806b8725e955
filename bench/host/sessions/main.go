// Command sessions runs a vdisk host in-process and drives many concurrent
// NBD-over-TLS sessions against many disks: each session is an NBD client
// doing random 64 KiB reads and writes (half each) through its own ticket.
// It prints the aggregate throughput, operations per second, latency
// percentiles, errors and the host's memory.
//
//	go run ./bench/host/sessions [-sessions 200] [-disks 50] [-size 256M] [-duration 10s]
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vdisk-project/vdisk/internal/auth"
	"github.com/vdisk-project/vdisk/internal/datastore"
	"github.com/vdisk-project/vdisk/nbd"
	"github.com/vdisk-project/vdisk/server"
)

func main() {
	sessions := flag.Int("sessions", 200, "concurrent NBD sessions")
	disks := flag.Int("disks", 50, "disks they spread over")
	size := flag.Int64("size", 256<<20, "disk size in bytes")
	dur := flag.Duration("duration", 10*time.Second, "how long to run")
	dir := flag.String("dir", "", "datastore directory (default: a temporary one)")
	flag.Parse()
	ctx := context.Background()
	if *dir == "" {
		d, err := os.MkdirTemp("", "vdisk-sessions")
		must(err)
		defer os.RemoveAll(d)
		*dir = d
	}
	s, err := server.New(ctx, server.Config{DataDir: *dir, Listen: []string{"127.0.0.1:0"}, NBDListen: []string{"127.0.0.1:0"},
		AdminPassword: "sessions bench password", PasswordIterations: 1000, Limits: auth.Limits{Memory: 2 << 30},
		Sessions: auth.Options{MaxTickets: 1024}})
	must(err)
	must(s.Listen())
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Serve(sctx) }()
	defer func() { stop(); <-done }()

	// Disks and one admin session issuing tickets.
	st := s.Store()
	for i := range *disks {
		_, err := st.CreateDisk(ctx, datastore.DiskSpec{Name: fmt.Sprintf("d%02d", i), Capacity: *size, CBT: true})
		must(err)
	}
	tickets := issueTickets(s, *sessions, *disks)
	tp := s.Thumbprint()

	clients := make([]*nbd.Client, *sessions)
	t0 := time.Now()
	for i := range clients {
		c, err := nbd.Dial(ctx, tickets[i], &nbd.ClientOptions{Thumbprint: tp, Connections: 1, Timeout: time.Minute})
		must(err)
		clients[i] = c
	}
	fmt.Printf("%d sessions over %d disks of %d MiB connected in %v\n", *sessions, *disks, *size>>20, time.Since(t0).Round(time.Millisecond))

	var ops, bytes, errs atomic.Int64
	lat := make([][]time.Duration, *sessions)
	deadline := time.Now().Add(*dur)
	var wg sync.WaitGroup
	start := time.Now()
	for i, c := range clients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), 9))
			buf := make([]byte, 64<<10)
			for j := range buf {
				buf[j] = byte(j + i)
			}
			for time.Now().Before(deadline) {
				off := rng.Int64N(*size/(64<<10)) * 64 << 10
				t := time.Now()
				var err error
				if rng.IntN(2) == 0 {
					_, err = c.ReadAt(buf, off)
				} else {
					_, err = c.WriteAt(buf, off)
				}
				lat[i] = append(lat[i], time.Since(t))
				if err != nil {
					errs.Add(1)
					continue
				}
				ops.Add(1)
				bytes.Add(int64(len(buf)))
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	pct := func(p float64) time.Duration {
		if len(all) == 0 {
			return 0
		}
		return all[int(float64(len(all)-1)*p)].Round(10 * time.Microsecond)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fmt.Printf("%d sessions, %d disks, %v: %.0f MB/s, %.0f ops/s (64 KiB, half reads), latency p50 %v p99 %v, errors %d\n",
		*sessions, *disks, el.Round(time.Millisecond), float64(bytes.Load())/el.Seconds()/1e6, float64(ops.Load())/el.Seconds(),
		pct(0.5), pct(0.99), errs.Load())
	fmt.Printf("process (host and clients together): heap %d MiB, sys %d MiB, goroutines %d\n", ms.HeapInuse>>20, ms.Sys>>20, runtime.NumGoroutine())
	for _, c := range clients {
		c.Close()
	}
	if errs.Load() > 0 {
		os.Exit(1)
	}
}

// issueTickets logs in through the API and issues one read-write ticket
// per session, round-robin over the disks.
func issueTickets(s *server.Server, n, disks int) []string {
	ctx := context.Background()
	h := &apiClient{s: s}
	h.login(ctx)
	out := make([]string, n)
	for i := range out {
		var t server.Ticket
		must(h.post(ctx, "/api/v1/tickets", server.TicketRequest{Disk: fmt.Sprintf("d%02d", i%disks), Mode: "rw", TTL: 3600, MaxConns: 1}, &t))
		out[i] = t.URI
	}
	return out
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "sessions:", err)
		os.Exit(1)
	}
}

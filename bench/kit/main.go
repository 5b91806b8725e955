// Command kit measures the vdisk kit against a running `vdisk serve`: full
// reads of a disk's allocated data through each transport, and many
// concurrent copies. bench/kit/compare.sh drives it.
//
//	kit -server ADDR -thumbprint TP import IMAGE NAME   clone a local image onto the host
//	kit -server ADDR -thumbprint TP read MODE NAME      read a snapshot of NAME via MODE
//	kit -server ADDR -thumbprint TP parallel MODE NAME N
//	kit local IMAGE                                     read the local file the same way
//
// The password comes from $VDISK_PASSWORD. Reads go into a sink that
// discards the data: what is measured is the transport.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"strconv"
	"sync"
	"time"

	"github.com/vdisk-project/vdisk"
	"github.com/vdisk-project/vdisk/disk"
)

func main() {
	server := flag.String("server", "", "host API address")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the run here")
	tp := flag.String("thumbprint", "", "host thumbprint")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		must(err)
		must(pprof.StartCPUProfile(f))
		defer pprof.StopCPUProfile()
	}
	ctx := context.Background()
	args := flag.Args()
	if len(args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: kit [-server A -thumbprint T] import|read|parallel|local …")
		os.Exit(64)
	}
	if args[0] == "local" {
		c, _ := vdisk.Connect(ctx, vdisk.ConnectParams{})
		report("file (local)", timeRead(ctx, c, vdisk.Spec{Path: args[1]}, 1))
		return
	}
	c, err := vdisk.Connect(ctx, vdisk.ConnectParams{Server: *server, Thumbprint: *tp, User: "admin",
		Password: os.Getenv("VDISK_PASSWORD"), Transports: "file:direct:nbdssl:nbd",
		Config: &vdisk.Config{NBDConnections: 4}})
	must(err)
	defer c.Close()
	switch args[0] {
	case "import":
		local, _ := vdisk.Connect(ctx, vdisk.ConnectParams{})
		t := time.Now()
		st, err := vdisk.Clone(ctx, c, vdisk.Spec{Disk: args[2]}, local, vdisk.Spec{Path: args[1]}, nil)
		must(err)
		fmt.Printf("imported %s as %s: %d MiB of data in %.2fs\n", args[1], args[2], st.Written>>20, time.Since(t).Seconds())
	case "read", "parallel":
		mode, name := args[1], args[2]
		n := 1
		if args[0] == "parallel" {
			n, _ = strconv.Atoi(args[3])
		}
		c2, err := vdisk.Connect(ctx, vdisk.ConnectParams{Server: *server, Thumbprint: *tp, User: "admin",
			Password: os.Getenv("VDISK_PASSWORD"), Transports: mode, Config: &vdisk.Config{NBDConnections: max(1, 4/n)}})
		must(err)
		sn, err := c2.CreateSnapshot(ctx, vdisk.Spec{Disk: name}, "bench", true)
		must(err)
		defer c2.RemoveSnapshot(ctx, vdisk.Spec{Disk: name}, sn.ID)
		r := timeRead(ctx, c2, vdisk.Spec{Disk: name, Snapshot: sn.ID}, n)
		report(fmt.Sprintf("%s x%d", mode, n), r)
	}
}

type result struct {
	bytes int64
	dur   time.Duration
	mode  string
}

// timeRead copies the allocated data of spec into a sink, n times at once.
func timeRead(ctx context.Context, c *vdisk.Conn, spec vdisk.Spec, n int) result {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var total int64
	var mode string
	// Open first, then time the reading: opening costs the same few
	// milliseconds whatever the size (one API call for a ticket or lease).
	hs := make([]*vdisk.Handle, n)
	for i := range hs {
		t := time.Now()
		h, err := c.Open(ctx, spec, vdisk.OpenReadOnly)
		must(err)
		if i == 0 {
			fmt.Fprintf(os.Stderr, "open via %s: %v\n", h.TransportMode(), time.Since(t).Round(time.Microsecond))
		}
		hs[i] = h
	}
	start := time.Now()
	for _, h := range hs {
		wg.Go(func() {
			defer h.Close()
			st, err := disk.Copy(ctx, sink{h.Size()}, h, &disk.CopyOptions{DstZeroed: true, ZeroBlock: -1})
			must(err)
			mu.Lock()
			total += st.Read
			mode = h.TransportMode()
			mu.Unlock()
		})
	}
	wg.Wait()
	return result{total, time.Since(start), mode}
}

func report(what string, r result) {
	fmt.Printf("%-16s %-7s %6.0f MiB in %7.3fs = %7.0f MB/s\n", what, r.mode, float64(r.bytes)/(1<<20), r.dur.Seconds(), float64(r.bytes)/r.dur.Seconds()/1e6)
}

// sink discards what is written to it.
type sink struct{ size int64 }

func (s sink) ReadAt(p []byte, off int64) (int, error)  { clear(p); return len(p), nil }
func (s sink) WriteAt(p []byte, off int64) (int, error) { return len(p), nil }
func (s sink) Size() int64                              { return s.size }
func (s sink) Flush() error                             { return nil }
func (s sink) Close() error                             { return nil }

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "kit:", vdisk.ErrorText(err))
		os.Exit(1)
	}
}
